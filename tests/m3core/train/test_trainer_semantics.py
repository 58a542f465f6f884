"""The trainer on the production path (issue 11): teacher scores with cross-device negatives, mixed dataset types
under 2 processes, split-batch through the trainer, gradient accumulation, fp16 with a loss scaler."""

from __future__ import annotations

import json
import os
import random
import subprocess

import numpy as np
import pytest
import torch

from m3core.train import TrainConfig
from m3core.train.trainer import Trainer
from tests.support import REPO_ROOT, textgen
from tests.support.procs import torchrun

ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
}


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def scored_lines(n, seed):
    """Retrieval lines with the miner's kind of teacher scores (similarities: a spread of tenths)."""
    rng = random.Random(seed)
    lines = []
    for e in textgen.retrieval_pairs(n, seed=seed):
        negs = e["neg"] * 3
        lines.append({
            "query": e["query"], "pos": e["pos"], "neg": negs,
            "pos_scores": [round(rng.uniform(0.7, 0.9), 3)], "neg_scores": [round(rng.uniform(0.3, 0.8), 3) for _ in negs],
        })  # fmt: skip
    return lines


def run_torchrun(config_path, timeout=300, *overrides):
    cmd = torchrun(
        "-m", "m3core.train", "--config", str(config_path), *[a for o in overrides for a in ("--set", o)]
    )
    try:
        return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:  # a rank waits forever in a collective the other never calls
        pytest.fail(
            f"torchrun hung for {timeout} s (ranks disagree about a collective): {str(err.stderr)[-2000:]}"
        )


@pytest.mark.parametrize(("cross", "kd"), [("dense", "m3_kd_loss"), ("all", "kl_div")])
def test_torchrun_trains_with_teacher_scores_and_cross_device_negatives(tiny_model_dir, tmp_path, cross, kd):
    """Before: `RuntimeError: shape '[1, 1, 3]' is invalid for input of size 6` at step 1 on both ranks."""
    data = write_lines(tmp_path / "scored.jsonl", scored_lines(16, seed=3))
    cfg = textgen.tiny_train_config(tiny_model_dir, tmp_path / "out", data, max_steps=3, group_size=3)
    cfg.save(tmp_path / "train.yaml")
    done = run_torchrun(tmp_path / "train.yaml", 300, f"cross_device={cross}", f"kd_loss={kd}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3 and summary["kd_loss"] == kd
    assert summary["teacher_temperature"] == cfg.temperature  # auto: similarity-range scores → τ


def flagembedding_directory(root):
    """A FlagEmbedding training directory: several JSONL files of mixed types, one marked no_in_batch_neg."""
    pairs = textgen.retrieval_pairs(32, seed=5)
    plain = [{k: e[k] for k in ("query", "pos", "neg")} for e in pairs[:16]]
    one_neg = [{**{k: e[k] for k in ("query", "pos", "neg")}, "type": "only_1neg"} for e in pairs[16:24]]
    classes = [
        {
            "query": e["query"],
            "pos": e["pos"],
            "neg": e["neg"] * 2,
            "type": "symmetric_class",
            "prompt": "topic: ",
        }
        for e in pairs[24:]
    ]
    write_lines(root / "retrieval.jsonl", plain)
    write_lines(root / "nli.jsonl", one_neg)
    write_lines(root / "classes.jsonl", classes)
    write_lines(root / "mixed_no_in_batch_neg.jsonl", plain[:4] + one_neg[:4])
    return root


def test_ranks_agree_on_a_directory_of_mixed_types(tiny_model_dir, tmp_path):
    """Before: a batch with a no-in-batch example on one rank only sent the other rank alone into all_gather."""
    data = flagembedding_directory(tmp_path / "data")
    cfg = textgen.tiny_train_config(
        tiny_model_dir, tmp_path / "out", data, epochs=2, group_size=4, cross_device="all", max_batch_size=2
    )
    cfg.save(tmp_path / "train.yaml")
    done = run_torchrun(tmp_path / "train.yaml", 300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] > 8


def test_flagembedding_batch_semantics(tiny_model_dir, tmp_path):
    """same_dataset_within_batch + drop_last + per-type group sizes: every batch comes from one file, has one
    group size (only_1neg 2, symmetric_class min(neg+1, G)), and none is incomplete."""
    data = flagembedding_directory(tmp_path / "data")
    cfg = textgen.tiny_train_config(
        tiny_model_dir, tmp_path / "out", data, group_size=4, same_dataset_within_batch=True, drop_last=True,
        max_batch_size=3, bucket_edges=[0, 64],
    )  # fmt: skip
    trainer = Trainer(cfg)
    ds, batches = trainer.dataset, trainer.sampler.global_batches(0)
    files = {ex.source.rsplit(":", 1)[0] for ex in ds.examples}
    assert len(files) == 4
    seen_sizes = set()
    for b in batches:
        assert len({ds.examples[i].source.rsplit(":", 1)[0] for i in b}) == 1
        groups = [ds.group(i, 0) for i in b]
        assert len({(g.group_size, g.in_batch_negatives) for g in groups}) == 1
        seen_sizes.add((ds.examples[b[0]].type, groups[0].group_size))
        assert len(b) == trainer.sampler.batch_size(0, groups[0].group_size)  # drop_last: all complete
    assert seen_sizes == {(None, 4), ("only_1neg", 2), ("symmetric_class", 3)}
    # symmetric_class: the query's prompt on the query; its passages keep the passage rule (FlagEmbedding)
    cls = next(i for i, ex in enumerate(ds.examples) if ex.type == "symmetric_class")
    assert ds.group(cls, 0).query.startswith("topic: ")
    left_out = sum(len(m) for m in trainer.sampler.buckets.values()) - sum(len(b) for b in batches)
    assert trainer.sampler.dropped == left_out > 0


def trainer_for(tiny_model_dir, out, data, **overrides):
    t = Trainer(textgen.tiny_train_config(tiny_model_dir, out, data, **overrides))
    t.model.eval()  # no dropout: the same function either way, gradients still flow
    return t


def grads(trainer):
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def test_split_batch_with_checkpointing_through_the_trainer_equals_whole_batch(tiny_model_dir, tmp_path):
    data = textgen.write_training_jsonl(tmp_path / "train.jsonl", textgen.retrieval_pairs(16, seed=2))
    # one 64-token bucket: a batch of 4 fits the 1024-token budget (the default 500-token edge holds one)
    whole = trainer_for(tiny_model_dir, tmp_path / "a", data, bucket_edges=[0, 64])
    split = trainer_for(tiny_model_dir, tmp_path / "b", data, bucket_edges=[0, 64], sub_batch_size=1)
    assert split.config.use_checkpointing and split.model.backbone.is_activation_checkpointing
    batch = next(iter(whole.sampler))
    assert len(batch) > 1
    loss_w, loss_s = whole.forward_backward(batch)["loss"], split.forward_backward(batch)["loss"]
    assert loss_s == pytest.approx(loss_w, rel=1e-6)
    gw, gs = grads(whole), grads(split)
    assert set(gw) == set(gs) and max(float(g.abs().max()) for g in gw.values()) > 0
    for n in gw:
        torch.testing.assert_close(gs[n], gw[n], rtol=1e-5, atol=1e-5, msg=n)


def test_split_batch_under_two_process_ddp_equals_whole_batch(tiny_model_dir, tmp_path):
    data = textgen.write_training_jsonl(tmp_path / "train.jsonl", textgen.retrieval_pairs(16, seed=2))
    results = {}
    for name, sub in (("whole", None), ("split", 1)):
        cfg = textgen.tiny_train_config(
            tiny_model_dir, tmp_path / name, data, sub_batch_size=sub, cross_device="all"
        )
        cfg.save(tmp_path / f"{name}.yaml")
        (tmp_path / f"{name}-out").mkdir()
        cmd = torchrun(str(REPO_ROOT / "tests/support/trainer_worker.py"), str(tmp_path / f"{name}.yaml"),
                       str(tmp_path / f"{name}-out"))  # fmt: skip
        done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = [dict(np.load(tmp_path / f"{name}-out" / f"rank{r}.npz")) for r in (0, 1)]
    for r in (0, 1):
        w, s = results["whole"][r], results["split"][r]
        assert float(s["loss"]) == pytest.approx(float(w["loss"]), rel=1e-6)
        names = [k for k in w if k.startswith("grad/")]
        assert names and set(names) == {k for k in s if k.startswith("grad/")}
        for n in names:
            np.testing.assert_allclose(s[n], w[n], rtol=1e-5, atol=1e-5, err_msg=n)


def test_gradient_accumulation_averages_its_batches(tiny_model_dir, tmp_path):
    data = textgen.write_training_jsonl(tmp_path / "train.jsonl", textgen.retrieval_pairs(24, seed=4))
    acc = trainer_for(tiny_model_dir, tmp_path / "a", data, gradient_accumulation_steps=2, max_grad_norm=None)
    ref = trainer_for(tiny_model_dir, tmp_path / "b", data)
    b1, b2 = list(acc.sampler)[:2]
    ref.forward_backward(b1)
    g1 = grads(ref)
    ref.optimizer.zero_grad(set_to_none=True)
    ref.forward_backward(b2)
    g2 = grads(ref)
    acc.train_step([b1, b2])  # leaves the step's accumulated gradient in .grad
    ga = grads(acc)
    for n in g1:
        torch.testing.assert_close(ga[n], (g1[n] + g2[n]) / 2, rtol=1e-5, atol=1e-6, msg=n)
    assert any(float((g1[n] - g2[n]).abs().max()) > 1e-4 for n in g1)  # two different batches


def test_a_run_with_accumulation_counts_optimizer_steps(tiny_model_dir, tmp_path):
    data = textgen.write_training_jsonl(tmp_path / "train.jsonl", textgen.retrieval_pairs(24, seed=4))
    t = Trainer(
        textgen.tiny_train_config(tiny_model_dir, tmp_path / "o", data, gradient_accumulation_steps=3)
    )
    per_epoch = len(t.sampler)
    assert t.total_steps == per_epoch // 3
    summary = t.train()
    assert summary["steps"] == per_epoch // 3 and t.sampler.position == 3 * (per_epoch // 3)


def test_fp16_with_a_loss_scaler_on_cpu(tiny_model_dir, tmp_path):
    data = textgen.write_training_jsonl(tmp_path / "train.jsonl", textgen.retrieval_pairs(16, seed=2))
    cfg = textgen.tiny_train_config(
        tiny_model_dir, tmp_path / "o", data, fp16=True, max_steps=4, save_steps=2
    )
    t = Trainer(cfg)
    assert t.scaler is not None and t.autocast_dtype == torch.float16
    summary = t.train()
    assert summary["fp16"] and summary["steps"] == 4
    log = [json.loads(x) for x in (tmp_path / "o" / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses and all(np.isfinite(v) and v > 0 for v in losses)  # not the reference's fp16 loss of 0
    assert all(r["loss_scale"] > 1 for r in log if "loss_scale" in r)
    saved = torch.load(tmp_path / "o" / "checkpoint-2" / "scaler.pt", weights_only=True)
    resumed = Trainer(cfg)
    assert resumed.scaler.get_scale() == 2.0**16  # a fresh scaler's initial scale
    resumed.resume(tmp_path / "o" / "checkpoint-2")
    assert resumed.scaler.state_dict() == saved and resumed.step == 2
    with pytest.raises(ValueError, match="exclude each other"):
        TrainConfig(**{**cfg.model_dump(), "bf16": "on"})


def test_kd_needs_teacher_scores_in_the_data(tiny_model_dir, tmp_path):
    data = textgen.write_training_jsonl(tmp_path / "train.jsonl", textgen.retrieval_pairs(8, seed=2))
    with pytest.raises(ValueError, match="no training example has pos_scores"):
        Trainer(textgen.tiny_train_config(tiny_model_dir, tmp_path / "o", data, kd_loss="kl_div"))


def test_examples_without_teacher_scores_train_beside_scored_ones(tiny_model_dir, tmp_path):
    lines = scored_lines(8, seed=3)
    for x in lines[::2]:
        del x["pos_scores"], x["neg_scores"]
    data = write_lines(tmp_path / "half.jsonl", lines)
    t = trainer_for(tiny_model_dir, tmp_path / "o", data, kd_loss="kl_div", teacher_temperature=0.05)
    assert t.teacher_temperature == 0.05
    metrics = t.forward_backward(list(range(8))[:4])
    assert np.isfinite(metrics["loss"])


def test_attention_dropout_of_the_config_reaches_the_attention_layers(tiny_model_dir, tmp_path):
    data = textgen.write_training_jsonl(tmp_path / "train.jsonl", textgen.retrieval_pairs(8, seed=5))

    def attention_dropouts(**overrides):
        t = Trainer(textgen.tiny_train_config(tiny_model_dir, tmp_path / "o", data, **overrides))
        return {
            round(m.dropout.p, 3)
            for m in t.model.backbone.modules()
            if type(m).__name__.endswith("SelfAttention")
        }

    assert attention_dropouts() == {0.1}  # the backbone's own
    assert attention_dropouts(attention_dropout=0.0) == {0.0}
