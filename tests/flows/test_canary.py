"""A canary API key, planted through every way a key reaches the platform, is found nowhere it writes.

Paths: the key variable (`M3_LLM_API_KEY`), a URL with userinfo (refused), and a server that echoes the key
back in its error bodies (as OpenAI's 401 "Incorrect API key provided: Bearer …" does); then a registration
with the retrain's parameters, which the MLflow store keeps. Searched: the bytes of every file under the
platform home (the DuckDB warehouse, the MLflow database and artifacts, Prefect's home and result storage, run
directories), the Prefect API's database, and everything the run logged or printed.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.data_fixtures import write_man_tree
from tests.support.procs import platform_home

CANARY = "sk-canary-3e1f0b8d9c7a4e2b-NEVER-STORED"


@pytest.fixture(scope="module")
def harness(tmp_path_factory, prefect_server):
    with platform_home(tmp_path_factory.mktemp("m3home-canary")) as home:
        yield home


class Echo(BaseHTTPRequestHandler):
    """Every other request: 500 with the Authorization header echoed in the body; else a plain question."""

    calls = 0

    def log_message(self, *a: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        Echo.calls += 1
        if Echo.calls % 2:
            code, body = 500, {"error": {"message": f"upstream refused {self.headers.get('Authorization')}"}}
        else:
            content = json.dumps({"question": "Which option does this command accept for recursion?"})
            body = {
                "id": "c", "object": "chat.completion", "created": 0, "model": "fake",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }  # fmt: skip
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_the_canary_key_is_never_written(harness, tmp_path, monkeypatch, caplog, capfd, tiny_model_dir):
    import shutil

    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    from flows.mine_pairs import mine_pairs
    from flows.params import MineParams, RetrainParams, SynthParams
    from flows.register_and_promote import register_and_promote_flow
    from flows.synthesize_queries import synthesize_queries
    from synth.config import BudgetConfig, EndpointConfig, SelectionConfig, SynthConfig

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("M3_LLM_API_KEY", CANARY)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}/v1"
    warehouse = str(harness / "warehouse.duckdb")
    try:
        mine_pairs(
            MineParams(gettext=False, manpage_root=str(write_man_tree(tmp_path / "man")), workers=1),
            warehouse,
        )
        # 1. A key in the URL is refused, and the refusal does not repeat it.
        with pytest.raises(ValueError, match="must not carry credentials") as refused:
            EndpointConfig(base_url=f"http://user:{CANARY}@127.0.0.1:{srv.server_port}/v1")
        assert CANARY not in str(refused.value)
        # 2. The key variable, against a server echoing it in its errors.
        config = SynthConfig(
            endpoint=EndpointConfig(
                base_url=url, model="fake", max_attempts=2, backoff_base_s=0.01, timeout_s=5
            ),
            selection=SelectionConfig(
                per_language=3, min_tokens=0, paragraph_min_chars=40, source="manpages"
            ),
            budget=BudgetConfig(max_requests=6),
        )
        synth = SynthParams(local_server=False, config=config)
        result = synthesize_queries(synth, warehouse)
    finally:
        srv.shutdown()
        srv.server_close()
    assert Echo.calls >= 2 and result["sent"] >= 1  # the server did echo the key at least once
    # 3. A registration, as the retrain makes it: its parameters (the endpoint's among them) go to MLflow.
    checkpoint = shutil.copytree(tiny_model_dir, harness / "runs" / "canary" / "model")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "sets.txt").write_text("one set\n")
    report = {"average": {"all": {"ndcg@10": 0.5}}, "sets": []}
    registered = register_and_promote_flow(
        str(checkpoint),
        report,
        str(tmp_path / "eval"),
        run_params=RetrainParams(synth=synth).model_dump(mode="json"),
    )
    assert registered["version"] == "1"

    searched = [p for p in Path(harness).rglob("*") if p.is_file()]
    db_url = PREFECT_API_DATABASE_CONNECTION_URL.value() or ""
    if db_url.startswith("sqlite") and "///" in db_url:
        searched.append(Path(db_url.split("///", 1)[1]))
    names = {p.name for p in searched}
    assert {"warehouse.duckdb", "mlflow.db", "retrain_params.json", "MLmodel"} <= names, sorted(names)
    assert any("mlartifacts" in p.parts for p in searched)  # the MLflow store: its database and artifacts
    leaks = [str(p) for p in searched if p.exists() and CANARY.encode() in p.read_bytes()]
    assert not leaks, leaks
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert CANARY not in logged
    assert "Bearer ***" in logged  # the echo was seen, and redacted
