"""A model carries its profile: prompts, pooling and hybrid weights are saved, loaded and applied by default.

Also the recipes (typed training presets) and the dev-split choice of hybrid weights, on the tiny model.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from m3core import M3Config, M3Embedder, M3Model
from m3core.evaluation import EvalConfig, EvalSet, evaluate
from m3core.evaluation.compare import headline, paired_difference
from m3core.evaluation.weights import choose_weights, default_grid, save_weights
from m3core.train import TrainConfig, train
from m3core.train.recipes import RECIPES, TrainOverrides, build_train_config, recipe_for
from tests.support import textgen

QUERIES = ["Fluss Berg", "river mountain engine"]
PASSAGES = ["Der Fluss fließt am Berg vorbei.", "An engine near the river and the mountain."]


def copy_without_config(src, dst):
    shutil.copytree(src, dst)
    (dst / "m3_config.json").unlink()
    return dst


@pytest.fixture(scope="module")
def e5_style_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with an e5-style profile written into its m3_config.json."""
    d = tmp_path_factory.mktemp("profiled") / "model"
    shutil.copytree(tiny_model_dir, d)
    cfg = M3Config.load(d)
    cfg.pooling, cfg.query_instruction, cfg.passage_instruction = "mean", "query: ", "passage: "
    cfg.save(d)
    return d


def test_profile_round_trips_through_m3_config(tmp_path):
    cfg = M3Config(pooling="mean", query_instruction="query: ", passage_instruction="passage: ")
    cfg.hybrid_weights = (1.0, 0.1, 2.0)
    cfg.save(tmp_path)
    loaded = M3Config.load(tmp_path)
    assert (loaded.query_instruction, loaded.passage_instruction, loaded.pooling) == (
        "query: ",
        "passage: ",
        "mean",
    )
    assert loaded.hybrid_weights == (1.0, 0.1, 2.0)
    with pytest.raises(ValueError, match="hybrid_weights"):
        M3Config(hybrid_weights=(0.0, 0.0, 0.0))


@pytest.mark.parametrize(
    ("name", "pooling", "query_instruction"),
    [("multilingual-e5-tiny", "mean", "query: "), ("bge-m3-tiny", "cls", None), ("my-encoder", "cls", None)],
)
def test_known_families_get_their_profile_on_first_load(
    tiny_model_dir, tmp_path, name, pooling, query_instruction
):
    d = copy_without_config(tiny_model_dir, tmp_path / name)
    model = M3Model.from_pretrained(d)
    assert model.config.pooling == pooling
    assert model.config.query_instruction == query_instruction
    assert model.config.passage_instruction == (None if query_instruction is None else "passage: ")


def test_embedder_applies_the_profile_by_default(e5_style_dir):
    emb = M3Embedder(str(e5_style_dir), show_progress=False)
    both = {"return_dense": True, "return_sparse": True}
    q = emb.encode_queries(QUERIES, **both)
    by_hand = emb.encode(["query: " + t for t in QUERIES], max_length=emb.query_max_length, **both)
    np.testing.assert_allclose(q["dense_vecs"], by_hand["dense_vecs"], atol=1e-6)
    assert q["lexical_weights"] == by_hand["lexical_weights"]
    p = emb.encode_corpus(PASSAGES, return_dense=True)["dense_vecs"]
    np.testing.assert_allclose(p, emb.encode(["passage: " + t for t in PASSAGES])["dense_vecs"], atol=1e-6)
    raw = emb.encode(PASSAGES)["dense_vecs"]
    assert np.abs(p - raw).max() > 1e-4  # the prefix really changes the input
    off = M3Embedder(str(e5_style_dir), show_progress=False, passage_instruction_for_retrieval="")
    np.testing.assert_allclose(off.encode_corpus(PASSAGES)["dense_vecs"], raw, atol=1e-6)


def test_training_saves_the_profile_it_trained_with(e5_style_dir, tmp_path):
    data = textgen.write_training_jsonl(tmp_path / "t.jsonl", textgen.retrieval_pairs(8))
    train(textgen.tiny_train_config(e5_style_dir, tmp_path / "out", data, max_steps=2))
    saved = M3Config.load(tmp_path / "out")
    assert (saved.query_instruction, saved.passage_instruction, saved.pooling) == (
        "query: ",
        "passage: ",
        "mean",
    )
    train(textgen.tiny_train_config(e5_style_dir, tmp_path / "out2", data, max_steps=1, query_instruction=""))
    assert M3Config.load(tmp_path / "out2").query_instruction is None
    assert M3Config.load(tmp_path / "out2").passage_instruction == "passage: "


def test_recipes_then_overrides_then_defaults():
    assert recipe_for("scratch") == "scratch" and recipe_for("BAAI/bge-m3") == "finetune"
    cfg = build_train_config(
        "finetune", "m", "out", ["d.jsonl"], TrainOverrides(max_steps=7, temperature=0.05)
    )
    assert cfg.learning_rate == RECIPES["finetune"].learning_rate == 3e-5
    assert (cfg.max_steps, cfg.temperature) == (7, 0.05)
    assert cfg.weight_decay == TrainConfig.model_fields["weight_decay"].default
    assert build_train_config("scratch", "m", "out", ["d"]).learning_rate == 2e-4
    with pytest.raises(ValueError, match="learning_rat"):
        TrainOverrides(learning_rat=1e-5)
    with pytest.raises(ValueError, match="unknown recipe"):
        build_train_config("fast", "m", "out", ["d"])


def small_sets(n_sets: int = 2) -> list[EvalSet]:
    sets = []
    for s in range(n_sets):
        examples = textgen.retrieval_pairs(12, seed=10 + s)
        corpus = {f"d{i}": e["pos"][0] for i, e in enumerate(examples)}
        corpus.update({f"n{i}": e["neg"][0] for i, e in enumerate(examples)})
        queries = {f"q{i}": e["query"] for i, e in enumerate(examples)}
        qrels = {f"q{i}": {f"d{i}": 1.0} for i in range(len(examples))}
        sets.append(EvalSet(f"set{s}", corpus, queries, qrels, {"kind": "monolingual", "lang": f"l{s}"}))
    return sets


def test_weights_chosen_on_dev_are_saved_and_used(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model_dir)
    emb = M3Embedder(str(model_dir), show_progress=False)
    dev = small_sets()
    choice = choose_weights(emb, dev, EvalConfig(candidates=20, bm25=False))
    assert choice.weights in default_grid()
    assert choice.score >= choice.paper_short - 1e-9 and choice.score == max(choice.scores.values())
    saved = save_weights(model_dir, emb, dev, EvalConfig(candidates=20, bm25=False))
    assert M3Config.load(model_dir).hybrid_weights == saved.weights
    assert json.loads((model_dir / "hybrid_weights.json").read_text())["weights"] == list(saved.weights)
    # the profile's weights are what an evaluation uses unless told otherwise
    report = evaluate(
        M3Embedder(str(model_dir), show_progress=False), dev, EvalConfig(candidates=20, bm25=False)
    )
    assert tuple(report["hybrid_weights"]) == saved.weights
    forced = evaluate(emb, dev, EvalConfig(candidates=20, bm25=False, weights="short"))
    assert tuple(forced["hybrid_weights"]) == (1.0, 0.3, 1.0)


def test_paired_difference_and_headline(tiny_embedder):
    sets = small_sets()
    report = evaluate(tiny_embedder, sets, EvalConfig(candidates=20))
    same = paired_difference(report, "dense", report, "dense")
    assert same.delta == 0 and same.low == 0 and same.high == 0
    d = paired_difference(report, "all", report, "bm25")
    assert d.low <= d.delta <= d.high
    assert d.delta == pytest.approx(
        report["average"]["all"]["ndcg@10"] - report["average"]["bm25"]["ndcg@10"]
    )
    claims = {r["claim"] for r in headline(report, report)}
    assert {"all − base dense", "all − BM25", "sparse − BM25"} <= claims
    assert all(0 <= e["nonempty_lexical"]["passages"] <= 1 for e in report["sets"])
