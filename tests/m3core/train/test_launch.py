"""Ways to run training: `m3 train`, torchrun with 2 gloo processes, metrics to a real MLflow SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import textgen
from tests.support.procs import torchrun


@pytest.fixture()
def config_file(tmp_path, tiny_model_dir):
    data = textgen.write_training_jsonl(tmp_path / "train.jsonl", textgen.retrieval_pairs(16, seed=2))
    cfg = textgen.tiny_train_config(tiny_model_dir, tmp_path / "out", data, max_steps=3)
    path = tmp_path / "train.yaml"
    cfg.save(path)
    return path


def test_torchrun_two_processes(config_file, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = torchrun("-m", "m3core.train", "--config", str(config_file), "--set", "cross_device=all")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3


def test_m3_train_reports_to_mlflow(config_file, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "m3core.cli",
        "-q",
        "train",
        "--config",
        str(config_file),
        "--set",
        "report_to=[mlflow]",
    ]
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )  # ./mlruns there
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    run = runs[0]
    history = client.get_metric_history(run.info.run_id, "train/self_distill")
    assert [m.step for m in history] == [1, 2, 3]
    for name in (
        "train/dense",
        "train/sparse",
        "train/colbert",
        "train/ensemble",
        "train/loss",
        "train/tokens_per_second",
    ):
        assert name in run.data.metrics, name
    assert run.data.params["train.group_size"] == "2"


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\noutput_dir: y\ntrain_data: [z]\ngroup_sise: 3\n")
    done = subprocess.run(
        [sys.executable, "-m", "m3core.cli", "train", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "bad.yaml" in done.stderr and "group_sise" in done.stderr
