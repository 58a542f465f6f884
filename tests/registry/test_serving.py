"""The pyfunc behind `mlflow models serve` (a real scoring server on 127.0.0.1): bad input is a 400 with
`INVALID_PARAMETER_VALUE` and the reason, never a stack trace; an empty list is an empty answer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest

from registry.log_model import log_m3_model
from tests.support.procs import free_port

pytestmark = pytest.mark.slow  # a scoring server starts in ~20 s on 2 cores


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("serving")
        with mlflow.start_run():
            info = log_m3_model(shutil.copytree(tiny_model_dir, root / "model"))
    finally:
        mlflow.set_tracking_uri(None)
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # `mlflow models serve` execs `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }
    argv = [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", info.model_uri, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{base}/ping", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError((root / "server.log").read_text()[-3000:]) from None
            time.sleep(0.5)
    yield base
    os.killpg(proc.pid, 9)
    proc.wait(timeout=30)
    log.close()


def post(base: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"inputs": [""]}, "input[0] is an empty string"),
        ({"inputs": ["river", "  "]}, "input[1] is an empty string"),
        ({"inputs": ["river"], "params": {"input_type": "document"}}, "input_type must be one of"),
        ({"inputs": ["river"], "params": {"return_dense": False}}, "nothing to encode"),
        # params are typed by the signature: MLflow refuses a JSON string for a number or a boolean before
        # the model sees it ("false" never becomes a truthy string)
        ({"inputs": ["river"], "params": {"batch_size": "2"}}, "DataType.long"),
        ({"inputs": ["river"], "params": {"return_sparse": "false"}}, "DataType.boolean"),
    ],
)
def test_bad_input_is_a_400_with_the_reason_and_no_stack_trace(server, body, reason):
    status, answer = post(server, body)
    assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
    assert (
        reason in answer["message"] and "stack_trace" not in answer and "Traceback" not in answer["message"]
    )


def test_texts_encode_and_an_empty_list_is_an_empty_answer(server):
    status, answer = post(server, {"inputs": ["river", "Fluss"], "params": {"return_sparse": True}})
    assert status == 200 and len(answer["predictions"]) == 2
    assert {"dense_vecs", "lexical_weights"} <= set(answer["predictions"][0])
    assert post(server, {"inputs": []}) == (200, {"predictions": []})
