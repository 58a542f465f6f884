"""Cross-device negatives: 2 CPU processes (gloo, launched by torchrun) equal one process on the whole batch."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import torch

from m3core.model import M3Model
from m3core.scoring import dense_score_matrix
from m3core.train.trainer import batch_scores
from tests.support import REPO_ROOT
from tests.support.dist_worker import GROUP, MODES, TEACHER, batch, encode, loss_fn, step
from tests.support.procs import torchrun

HERE = REPO_ROOT / "tests" / "support"


def run_ranks(model_dir, out_dir, cross, kd="none"):
    env = {
        **os.environ,
        "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    cmd = torchrun(str(HERE / "dist_worker.py"), str(model_dir), str(out_dir), cross, kd)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [dict(np.load(out_dir / f"rank{r}.npz")) for r in (0, 1)]


def single_process(model_dir, kd="none"):
    model = M3Model.from_pretrained(model_dir).eval()
    queries, passages = batch()
    parts = step(model, queries, passages, "none", kd=kd, teacher=TEACHER)
    parts["loss"].backward()
    return {k: float(v.detach()) for k, v in parts.items()}, grads_of(model)


def grads_of(model):
    return {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}


def sharded_dense_reference(model_dir, kd="none", world=2):
    """What `cross_device: dense` means, in one process: each shard's queries score the passages of every
    shard for the dense loss and only their own shard's for the other modes and the ensemble; the total is the
    mean over shards (what DDP's averaging of the ranks' gradients computes)."""
    model = M3Model.from_pretrained(model_dir).eval()
    queries, passages = batch()
    per_q = len(queries) // world
    shards = [
        encode(
            model, queries[r * per_q : (r + 1) * per_q], passages[r * per_q * GROUP : (r + 1) * per_q * GROUP]
        )
        for r in range(world)
    ]
    all_dense = torch.cat([po["dense"] for _, po in shards])
    total = 0
    for r, (qo, po) in enumerate(shards):
        scores, target, _ = batch_scores(qo, po, MODES, GROUP, True, "none", model.tokenizer.pad_token_id)
        extra = {
            "dense_wide": dense_score_matrix(qo["dense"], all_dense).float(),
            "dense_wide_target": (torch.arange(per_q) + r * per_q) * GROUP,
        }
        if kd != "none":
            extra |= {
                "teacher_scores": torch.tensor(TEACHER[r * per_q : (r + 1) * per_q]),
                "group_size": GROUP,
            }
        total = total + loss_fn(kd)(scores, target, step=0, **extra)["loss"] / world
    total.backward()
    return grads_of(model)


def assert_grads_equal(ranks, grads):
    names = [k[5:] for k in ranks[0] if k.startswith("grad/")]
    assert set(names) == set(grads)
    for n in names:  # DDP-averaged gradients equal the reference, on every rank
        for r in ranks:
            np.testing.assert_allclose(r[f"grad/{n}"], grads[n], rtol=1e-4, atol=1e-6, err_msg=n)
    assert max(float(np.abs(g).max()) for g in grads.values()) > 0  # the check is not vacuous


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return single_process(tiny_model_dir)


def test_all_modes_gathered_equal_single_process(tiny_model_dir, tmp_path, reference):
    ranks = run_ranks(tiny_model_dir, tmp_path, "all")
    parts, grads = reference
    for k, v in parts.items():  # each rank's loss covers its queries; their mean is the whole batch's loss
        assert np.mean([r[f"part/{k}"] for r in ranks]) == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert_grads_equal(ranks, grads)


@pytest.mark.parametrize("kd", ["none", "m3_kd_loss"])
def test_default_dense_mode_gradients_equal_the_sharded_reference(tiny_model_dir, tmp_path, kd):
    """`cross_device: dense` (the default), with and without teacher scores (which crashed it: issue 11)."""
    assert_grads_equal(
        run_ranks(tiny_model_dir, tmp_path, "dense", kd), sharded_dense_reference(tiny_model_dir, kd)
    )


@pytest.mark.parametrize("kd", ["kl_div", "m3_kd_loss"])
def test_teacher_scores_with_all_modes_gathered_equal_single_process(tiny_model_dir, tmp_path, kd):
    ranks = run_ranks(tiny_model_dir, tmp_path, "all", kd)
    parts, grads = single_process(tiny_model_dir, kd)
    assert np.mean([r["part/loss"] for r in ranks]) == pytest.approx(parts["loss"], rel=1e-5)
    assert_grads_equal(ranks, grads)


def test_dense_only_gathering_matches_the_dense_loss(tiny_model_dir, tmp_path, reference):
    ranks = run_ranks(tiny_model_dir, tmp_path, "dense")
    parts, _ = reference
    assert np.mean([r["part/dense"] for r in ranks]) == pytest.approx(parts["dense"], rel=1e-5)
    # the other modes stay in-batch per rank: fewer negatives than the whole batch, so lower loss
    assert np.mean([r["part/colbert"] for r in ranks]) < parts["colbert"]


def test_gather_is_identity_outside_a_process_group():
    from m3core.train.distributed import gather_with_grad

    t = torch.ones(2, 3, requires_grad=True)
    assert gather_with_grad(t) is t
