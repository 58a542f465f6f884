"""A tiny end-to-end run on generated data: the loss falls and every mode retrieves better afterwards."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m3core import M3Embedder, scoring
from m3core.train import TrainConfig, train
from tests.support import textgen


def mrr_per_mode(model_dir, examples) -> dict[str, float]:
    """MRR of each training query's positive among all passages, per mode."""
    emb = M3Embedder(str(model_dir), show_progress=False)
    corpus = [e["pos"][0] for e in examples] + [e["neg"][0] for e in examples]
    both = {"return_dense": True, "return_sparse": True, "return_colbert_vecs": True}
    q = emb.encode_queries([e["query"] for e in examples], **both)
    p = emb.encode_corpus(corpus, **both)
    scores = {
        "dense": scoring.dense_scores(q["dense_vecs"], p["dense_vecs"]),
        "sparse": scoring.lexical_scores(q["lexical_weights"], p["lexical_weights"]),
        "colbert": scoring.colbert_scores(q["colbert_vecs"], p["colbert_vecs"]),
    }
    out = {}
    for mode, s in scores.items():
        ranks = [1 + int((s[i] > s[i, i]).sum()) for i in range(len(examples))]
        out[mode] = float(np.mean([1 / r for r in ranks]))
    return out


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    examples = textgen.retrieval_pairs(36, seed=7)
    data = textgen.write_training_jsonl(d / "t.jsonl", examples)
    cfg = textgen.tiny_train_config(
        tiny_model_dir, d / "out", data, learning_rate=2e-3, max_steps=60, warmup_ratio=0.05,
        temperature=0.05, tokens_per_batch=4096, max_batch_size=12, logging_steps=5,
    )  # fmt: skip
    before = mrr_per_mode(tiny_model_dir, examples)
    summary = train(cfg)
    after = mrr_per_mode(d / "out", examples)
    log = [json.loads(x) for x in (d / "out" / "train_log.jsonl").read_text().splitlines()]
    return before, after, summary, log, d / "out"


def test_loss_falls(trained):
    _, _, summary, log, _ = trained
    assert summary["steps"] == 60
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]
    for part in ("dense", "sparse", "colbert", "ensemble", "self_distill", "tokens_per_second"):
        assert part in log[0], part


def test_every_mode_retrieves_better(trained):
    # 60 steps: over training seeds 1-5 and 42 the smallest lift was dense +0.20, sparse +0.17, colbert +0.35;
    # at 40 steps dense ranged +0.07..+0.21, too close to the bar.
    before, after, *_ = trained
    for mode in ("dense", "sparse", "colbert"):
        assert after[mode] > before[mode] + 0.1, (mode, before, after)


def test_outputs_are_saved_with_their_config(trained):
    *_, out = trained
    for name in (
        "model.safetensors",
        "colbert_linear.pt",
        "sparse_linear.pt",
        "m3_config.json",
        "train_config.yaml",
        "train_summary.json",
    ):
        assert (out / name).is_file(), name
    assert TrainConfig.load(out / "train_config.yaml").max_steps == 60
