"""flows/retries.py for real: Prefect tasks (retries=2, delay 0) on a temporary Prefect API retry transient faults
only — a DuckDB file locked by another process, HTTP 5xx from a loopback server, a refused connection — and fail
a ValueError or an HTTP 400 at once. Every task in flows/ that has retries uses the condition."""

from __future__ import annotations

import contextlib
import importlib
import json
import pkgutil
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import requests
from prefect import task

from tests.support.procs import free_port, platform_home

# `flows` is imported inside the temporary Prefect API only (importing it applies the platform environment).
# The tasks run outside a flow: their logs stay local.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning"
)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory, prefect_server):
    with platform_home(tmp_path_factory.mktemp("retries")) as home:
        yield home


def attempts_of(fn, *args, condition=None):
    """Run `fn(*args)` as a Prefect task (retries=2, no delay, `condition`, by default `transient`); (attempts,
    final state)."""
    from flows.retries import transient

    attempts = []

    @task(retries=2, retry_delay_seconds=60, retry_condition_fn=condition or transient)
    def work():
        attempts.append(1)
        return fn(*args)

    state = work.with_options(retry_delay_seconds=0)(return_state=True)
    return len(attempts), state


def test_a_value_error_runs_once(prefect_api):
    def missing_eval_set():
        raise ValueError("no eval set under /runs/x/eval")

    attempts, state = attempts_of(missing_eval_set)
    assert attempts == 1 and state.is_failed()


# ---------------------------------------------------------------- DuckDB: a write connection of another process
HOLD = """import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()  # until the test closes stdin
con.close()
"""


@contextlib.contextmanager
def lock_held_by_another_process(path):
    """A subprocess holding a write connection to the DuckDB file `path` until its stdin is closed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_locked_warehouse_is_retried_until_the_lock_is_released(prefect_api, tmp_path):
    from flows.retries import transient
    from m3core.data.warehouse import Warehouse

    path = tmp_path / "warehouse.duckdb"
    with lock_held_by_another_process(path) as holder:
        errors = []

        def release_after_first_failure(task_, task_run, state):
            errors.append(state.data)
            if holder.poll() is None:
                holder.stdin.close()
                holder.wait(30)
            return transient(task_, task_run, state)

        def count_pairs():
            with Warehouse(path, lock_timeout=0.2) as wh:  # what mine_pairs.ingest opens
                return wh.con.execute("SELECT count(*) FROM pairs").fetchone()[0]

        attempts, state = attempts_of(count_pairs, condition=release_after_first_failure)
        assert attempts == 2, errors
        assert state.is_completed() and state.result() == 0
        assert "Could not set lock on file" in str(errors[0].__cause__)


def test_a_held_lock_is_retried_until_retries_run_out(prefect_api, tmp_path):
    import duckdb

    path = tmp_path / "held.duckdb"
    with lock_held_by_another_process(path):
        attempts, state = attempts_of(lambda: duckdb.connect(str(path)).close())
        assert attempts == 3 and state.is_failed()
        with pytest.raises(duckdb.IOException, match="lock"):
            state.result()


# ---------------------------------------------------------------- HTTP: a loopback server answering a script
class Scripted(BaseHTTPRequestHandler):
    def _answer(self):
        script = self.server.script
        status, body = script.pop(0) if len(script) > 1 else script[0]
        self.server.hits += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body.startswith("{") else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.script, server.hits = [(200, "{}")], 0
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def via_httpx(base):
    httpx.get(f"{base}/health", timeout=5).raise_for_status()


def via_requests(base):
    requests.get(f"{base}/health", timeout=5).raise_for_status()


def via_urllib(base):
    urllib.request.urlopen(f"{base}/health", timeout=5).close()


def via_openai(base):  # the synth flow's LLM endpoint
    import openai

    client = openai.OpenAI(base_url=f"{base}/v1", api_key="no-key-required", max_retries=0, timeout=5)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


def via_mlflow(base):  # the register flow's tracking server
    import mlflow

    mlflow.MlflowClient(tracking_uri=base).search_experiments()


CLIENTS = [via_httpx, via_requests, via_urllib, via_openai, via_mlflow]
UNAVAILABLE = (503, "Service Unavailable")  # a proxy's page, not JSON
BAD_REQUEST = (400, json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad request"}))


@pytest.fixture
def no_client_retries(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries would hide the count
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.__name__)
def test_http_503_is_retried_and_400_is_not(prefect_api, http_server, no_client_retries, client):
    base = f"http://127.0.0.1:{http_server.server_address[1]}"
    http_server.script = [UNAVAILABLE]
    attempts, state = attempts_of(client, base)
    assert (attempts, http_server.hits) == (3, 3) and state.is_failed()

    http_server.script, http_server.hits = [BAD_REQUEST], 0
    attempts, state = attempts_of(client, base)
    assert (attempts, http_server.hits) == (1, 1) and state.is_failed()


def test_http_503_then_success(prefect_api, http_server):
    base = f"http://127.0.0.1:{http_server.server_address[1]}"
    http_server.script = [UNAVAILABLE, (429, "slow down"), (200, "{}")]
    attempts, state = attempts_of(via_httpx, base)
    assert attempts == 3 and state.is_completed()


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.__name__)
def test_a_refused_connection_is_retried(prefect_api, no_client_retries, client):
    attempts, state = attempts_of(client, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert attempts == 3 and state.is_failed()


def test_classification(prefect_api):
    import duckdb
    from mlflow.exceptions import MlflowException, RestException

    from flows.retries import is_transient

    assert not is_transient(
        duckdb.IOException('Cannot open database "x" in read-only mode: database does not exist')
    )
    assert is_transient(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "later"}))
    assert not is_transient(
        RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no model m3"})
    )
    assert not is_transient(
        MlflowException("Registered Model with name=m3 not found")
    )  # default INTERNAL_ERROR
    assert not is_transient(None)
    group = ExceptionGroup("shards", [TimeoutError(), ConnectionResetError()])
    assert is_transient(group) and not is_transient(ExceptionGroup("shards", [TimeoutError(), KeyError("x")]))


def test_every_task_with_retries_in_flows_uses_the_condition(prefect_api):
    from prefect import Task

    import flows
    from flows.retries import transient

    with_retries = {}
    for info in pkgutil.iter_modules(flows.__path__):
        module = importlib.import_module(f"flows.{info.name}")
        for name, obj in vars(module).items():
            # (the register tasks take their retries from RegisterParams, at call time, through with_options)
            if (
                isinstance(obj, Task)
                and obj.__module__ == module.__name__
                and (obj.retries or obj.retry_condition_fn)
            ):
                with_retries[f"{info.name}.{name}"] = obj.retry_condition_fn
    assert "mine_pairs.ingest" in with_retries and "register_and_promote.register" in with_retries
    assert {name: fn for name, fn in with_retries.items() if fn is not transient} == {}
