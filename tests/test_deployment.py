"""The operator's path, for real: `prefect server start` on 127.0.0.1, a process worker, `prefect deploy`, then
`prefect deployment run 'retrain/adhoc' --watch` with small parameters; the registry must get a new version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from procs import free_port
from test_flows import small_params

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def stop(proc: subprocess.Popen) -> None:
    for _ in range(2):  # a Prefect worker wants two SIGTERMs
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                continue
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_deployment_run_registers_a_model(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "M3_HOME": str(tmp_path / "m3"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    worker_log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    worker = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[
                -2000:
            ]
            time.sleep(0.5)

        def prefect(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
            done = subprocess.run(
                [BIN / "prefect", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
            )
            assert done.returncode == 0, (
                f"prefect {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
            return done

        prefect("work-pool", "create", "m3-process", "--type", "process")
        prefect("--no-prompt", "deploy", "--prefect-file", "flows/prefect.yaml", "--name", "retrain/adhoc")
        worker = subprocess.Popen(
            [BIN / "prefect", "worker", "start", "--pool", "m3-process"],
            env=env,
            cwd=ROOT,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        params = {"params": json.loads(small_params("deployed").model_dump_json())}
        done = prefect(
            "deployment", "run", "retrain/adhoc", "--params", json.dumps(params), "--watch", timeout=1800
        )
        assert "Completed" in done.stdout, done.stdout[-3000:]
        client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        versions = client.search_model_versions("name='m3'")  # (search results carry no aliases)
        assert len(versions) == 1
        assert str(client.get_model_version_by_alias("m3", "challenger").version) == str(versions[0].version)
    finally:
        if worker is not None:
            stop(worker)
        stop(server)
