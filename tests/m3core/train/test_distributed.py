"""Cross-device negatives: 2 CPU processes (gloo, launched by torchrun) equal one process on the whole batch."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import torch

from m3core.model import M3Model
from tests.support import REPO_ROOT
from tests.support.dist_worker import batch, step
from tests.support.procs import torchrun

HERE = REPO_ROOT / "tests" / "support"


def run_ranks(model_dir, out_dir, cross):
    env = {
        **os.environ,
        "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    cmd = torchrun(str(HERE / "dist_worker.py"), str(model_dir), str(out_dir), cross)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [dict(np.load(out_dir / f"rank{r}.npz")) for r in (0, 1)]


def single_process(model_dir):
    model = M3Model.from_pretrained(model_dir).eval()
    queries, passages = batch()
    parts = step(model, queries, passages, "none")
    parts["loss"].backward()
    return {k: float(v.detach()) for k, v in parts.items()}, {
        n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return single_process(tiny_model_dir)


def test_all_modes_gathered_equal_single_process(tiny_model_dir, tmp_path, reference):
    ranks = run_ranks(tiny_model_dir, tmp_path, "all")
    parts, grads = reference
    for k, v in parts.items():  # each rank's loss covers its queries; their mean is the whole batch's loss
        assert np.mean([r[f"part/{k}"] for r in ranks]) == pytest.approx(v, rel=1e-5, abs=1e-6), k
    names = [k[5:] for k in ranks[0] if k.startswith("grad/")]
    assert set(names) == set(grads)
    for n in names:  # DDP-averaged gradients equal the single-process gradients, on every rank
        for r in ranks:
            np.testing.assert_allclose(r[f"grad/{n}"], grads[n], rtol=1e-4, atol=1e-6, err_msg=n)
    assert max(float(np.abs(g).max()) for g in grads.values()) > 0  # the check is not vacuous


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
