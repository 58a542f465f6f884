"""Registration under faults: the registering process SIGKILLed halfway, the MLflow tracking server (a real
`mlflow server` on 127.0.0.1) stopped halfway. A rerun finishes the version that was started: no second
version, no version left without its tags or aliases; a server that stays away ends in one clear error that
names the kept checkpoint and the command that registers it later.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from registry.register import COMPLETE, DIGEST_TAG, PENDING, STATE_TAG, checkpoint_digest
from tests.support.procs import free_port

pytestmark = pytest.mark.faults

REPORT = {"average": {"all": {"ndcg@10": 0.5}, "dense": {"ndcg@10": 0.45}}, "sets": []}
BASE_REPORT = {"average": {"dense": {"ndcg@10": 0.4}}, "sets": []}


def versions(client: MlflowClient, name: str) -> list:
    return client.search_model_versions(f"name = '{name}'")


def wait_for_version(client: MlflowClient, name: str, proc: subprocess.Popen, timeout: float = 120.0):
    """Poll until `name` has a version (the registering process has created it), then return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = versions(client, name)
        if found:
            return found[0]
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(
                f"the registering process ended (rc {proc.returncode}) first:\n{out[-3000:]}"
            )
        time.sleep(0.01)
    raise AssertionError(f"no version of {name} after {timeout} s")


def assert_one_complete_version(client: MlflowClient, name: str, checkpoint: Path) -> None:
    (mv,) = versions(client, name)
    assert mv.tags[STATE_TAG] == COMPLETE and mv.tags[DIGEST_TAG] == checkpoint_digest(checkpoint)
    assert mv.tags["promotion"] == "promoted" and "promotion_reason" in mv.tags
    assert "## Promotion" in mv.description
    for alias in ("challenger", "champion"):
        assert str(client.get_model_version_by_alias(name, alias).version) == str(mv.version)


REGISTER = """
import json, sys
import mlflow
from registry.register import register_and_promote
mlflow.set_experiment("faults")
register_and_promote(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), "eval-set-1", base_report=json.loads(sys.argv[4]),
                     base_model=sys.argv[1], onnx=False)
"""


def test_a_registration_killed_halfway_is_finished_by_the_rerun(tiny_model_dir, tmp_path, monkeypatch):
    import mlflow

    from registry.register import register_and_promote

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    checkpoint = shutil.copytree(tiny_model_dir, tmp_path / "model")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            REGISTER,
            str(checkpoint),
            "m3-kill",
            json.dumps(REPORT),
            json.dumps(BASE_REPORT),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = MlflowClient(tracking_uri=uri)
    try:
        wait_for_version(client, "m3-kill", proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    (killed,) = versions(client, "m3-kill")
    assert killed.tags[STATE_TAG] == PENDING, "killed after it completed: the test saw nothing"
    with pytest.raises(Exception, match="alias"):
        client.get_model_version_by_alias("m3-kill", "challenger")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("faults")
        r = register_and_promote(checkpoint, "m3-kill", REPORT, "eval-set-1", base_report=BASE_REPORT,
                                 base_model=checkpoint, onnx=False)  # fmt: skip
        assert r.version == str(killed.version) and r.decision.promote
        assert_one_complete_version(client, "m3-kill", checkpoint)
        # A completed registration is left alone: registering the same checkpoint again is a new version.
        again = register_and_promote(
            checkpoint, "m3-kill", REPORT, "eval-set-1", base_model=checkpoint, onnx=False
        )
        assert int(again.version) == int(killed.version) + 1
    finally:
        mlflow.set_tracking_uri(None)


class MlflowServer:
    """`mlflow server` on 127.0.0.1 over a SQLite store and an artifact folder that outlive its restarts."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.proc = root, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        argv = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination", str(self.root / "artifacts")]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = MlflowClient(tracking_uri=self.uri)
        deadline = time.monotonic() + 120
        while True:
            try:
                client.search_experiments()
                return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.5)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its workers: the host went away
        self.proc.wait(timeout=30)


def run_dir(tmp_path: Path, checkpoint: Path) -> Path:
    """A retrain run directory as `flows.retrain` leaves it before registration."""
    from flows.params import RegisterParams, RetrainParams

    run = tmp_path / "runs" / "r1"
    (run / "eval" / "trained").mkdir(parents=True)
    (run / "eval" / "base").mkdir(parents=True)
    (run / "data" / "eval").mkdir(parents=True)
    (run / "data" / "eval" / "sets.txt").write_text("one set\n")
    shutil.copytree(checkpoint, run / "model")
    (run / "eval" / "trained" / "report.json").write_text(json.dumps(REPORT))
    (run / "eval" / "base" / "report.json").write_text(json.dumps(BASE_REPORT))
    params = RetrainParams(
        registry=RegisterParams(model_name="m3-down", onnx=False, retries=2, retry_delay_seconds=[0.5])
    )
    (run / "retrain_params.json").write_text(params.model_dump_json())
    (run / "registration.json").write_text(json.dumps({
        "checkpoint": str(run / "model"), "eval_dir": str(run / "data" / "eval"),
        "eval_report": str(run / "eval" / "trained" / "report.json"),
        "base_report": str(run / "eval" / "base" / "report.json"),
        "base_model": str(checkpoint), "train_config": {"lr": 3e-5}, "data_snapshot": "snap-1",
    }))  # fmt: skip
    return run


def test_tracking_server_stopped_during_registration(tiny_model_dir, tmp_path, prefect_server):
    from prefect.settings import PREFECT_API_URL

    from m3core.cli import main

    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    run = run_dir(tmp_path, tiny_model_dir)
    assert main(["register", str(tmp_path / "nothing")]) == 2  # not a run directory: one line, exit 2
    env = {
        **os.environ,
        "M3_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": server.uri,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # MLflow's own retries (minutes) would hide the flow's
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    m3 = [str(Path(sys.executable).with_name("m3")), "register", str(run)]
    proc = subprocess.Popen(m3, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(tracking_uri=server.uri)
    wait_for_version(client, "m3-down", proc)
    server.kill()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3, out[-3000:]
    assert "Retry 2/2" in out, out[-3000:]  # the register task was retried (transient: connection refused)
    last = out.strip().splitlines()[-1]
    assert last.startswith("m3 register: error: registering") and f"m3 register {run}" in last, last
    assert (run / "model" / "model.safetensors").is_file()

    server.start()
    (mv,) = versions(client, "m3-down")
    assert mv.tags[STATE_TAG] == PENDING
    done = subprocess.run(m3, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"registered models:/m3-down/{mv.version} (champion" in done.stdout
    assert_one_complete_version(client, "m3-down", run / "model")
    server.kill()
