"""Fault test: the LLM endpoint dies mid-run. A real OpenAI-compatible server in a separate process answers the
first requests, holds the next ones open, and is SIGKILLed while those are in flight: their connections are cut
and every retry is refused. The run must end (no hang) as partial with the answered requests stored and the rest
counted as failed with a clear error; a rerun against the restarted server sends only what did not succeed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from m3core.data.warehouse import Warehouse
from synth import generate
from tests.synth.test_faults import DOCS, _config, add_docs

pytestmark = pytest.mark.faults

# The endpoint, as its own program (stdlib only, starts in ~50 ms): logs each request's document title to a file
# as it arrives, answers the first ANSWER_FIRST requests (-1: all) and holds later ones open until it dies.
SERVER = r"""
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, answers_path, log_path, answer_first = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
answers = json.load(open(answers_path))
log, lock, seen = open(log_path, "a"), threading.Lock(), [0]

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        title = next(t for t in answers if t in req["messages"][-1]["content"])
        with lock:
            seen[0] += 1
            n = seen[0]
            log.write(title + "\n")
            log.flush()
        if 0 <= answer_first < n:
            time.sleep(600)  # in flight until the process is killed
        body = json.dumps({
            "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answers[title]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer.daemon_threads = True
srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(srv.server_port, flush=True)
srv.serve_forever()
"""

ANSWER_FIRST = 3  # = the run's concurrency: the first wave is answered, the second is in flight at the kill


class EndpointProcess:
    """The server program above, started and ready (its port read from its first line of output)."""

    def __init__(self, tmp: Path, name: str, answer_first: int, port: int = 0) -> None:
        script, answers = tmp / "llm_server.py", tmp / "answers.json"
        script.write_text(SERVER)
        answers.write_text(json.dumps({d[0]: d[3] for d in DOCS}))
        self.log = tmp / f"{name}.log"
        self.log.touch()
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(port), str(answers), str(self.log), str(answer_first)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def requests(self) -> list[str]:
        """Titles of the requests received so far, in arrival order."""
        return self.log.read_text().splitlines()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def _kill_when(server: EndpointProcess, n_requests: int, killed: dict) -> threading.Thread:
    """A thread that SIGKILLs `server` once it has received `n_requests` (recording what it had then)."""

    def watch() -> None:
        deadline = time.monotonic() + 30
        while len(server.requests()) < n_requests and time.monotonic() < deadline:
            time.sleep(0.005)
        killed["requests"] = server.requests()
        server.kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _counts(con) -> dict[str, int]:
    tables = ("synth_requests", "synth_queries", "synth_rejections", "synth_runs")
    out = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    out["pairs"] = con.execute("SELECT count(*) FROM pairs WHERE kind = 'synthetic'").fetchone()[0]
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("via", ["api", "cli"])
def test_endpoint_killed_mid_run_then_rerun_sends_only_the_failed(tmp_path, via):
    from m3core.cli import main

    planned = len(DOCS)
    cfg = _config("http://127.0.0.1:9/v1")  # the real URL below, once the server has its port
    path = tmp_path / "w.duckdb"
    with Warehouse(path) as wh:
        add_docs(wh)

    def generate_once(url: str):
        """One run against `url`: (report or None, exit code or None, seconds)."""
        c = cfg.model_copy(update={"endpoint": cfg.endpoint.model_copy(update={
            "base_url": url, "concurrency": ANSWER_FIRST, "timeout_s": 5.0, "max_attempts": 3,
            "backoff_base_s": 0.05, "backoff_max_s": 0.2})})  # fmt: skip
        t0 = time.monotonic()
        if via == "api":
            with Warehouse(path) as wh:
                return generate.run(c, wh, progress=False), None, time.monotonic() - t0
        config = tmp_path / "synth.yaml"
        config.write_text(yaml.safe_dump(c.model_dump(mode="json")))
        code = main(["-q", "synth", "--warehouse", str(path), "generate", "--config", str(config)])
        return None, code, time.monotonic() - t0

    first = EndpointProcess(tmp_path, "first", answer_first=ANSWER_FIRST)
    killed: dict = {}
    try:
        watcher = _kill_when(first, 2 * ANSWER_FIRST, killed)
        rep, code, took = generate_once(first.url)
        watcher.join(timeout=10)
    finally:
        first.kill()
    # The server died with requests in flight: the first wave answered, the second received and unanswered.
    assert len(killed["requests"]) == 2 * ANSWER_FIRST, killed
    answered, in_flight = set(killed["requests"][:ANSWER_FIRST]), set(killed["requests"][ANSWER_FIRST:])
    assert len(answered | in_flight) == 2 * ANSWER_FIRST
    # The run ended promptly (each failed request: 3 refused/cut attempts and short backoffs, no timeout wait).
    assert took < 15, f"the run took {took:.1f} s"
    if via == "cli":
        assert code == 4  # partial
    else:
        assert (rep.status, rep.n_planned, rep.n_cached, rep.n_sent) == ("partial", planned, 0, planned)
        assert (rep.n_sent - rep.n_errors, rep.n_errors) == (ANSWER_FIRST, planned - ANSWER_FIRST)
        assert "To continue, run the same command again" in rep.message

    with Warehouse(path, read_only=True) as wh:
        con = wh.con
        run = con.execute("SELECT status, n_planned, n_cached, n_sent, n_errors FROM synth_runs").fetchone()
        assert run == ("partial", planned, 0, planned, planned - ANSWER_FIRST)
        rows = con.execute(
            "SELECT d.title, q.status, q.attempts, q.error, q.response FROM synth_requests q JOIN documents d "
            "ON q.messages LIKE '%' || d.title || '%'"
        ).fetchall()
        assert len(rows) == planned  # answered + failed = planned, one row each
        ok = {r[0] for r in rows if r[1] == "ok"}
        failed = {r[0]: r for r in rows if r[1] == "error"}
        assert ok == answered and len(failed) == planned - ANSWER_FIRST
        assert in_flight <= set(failed)  # cut mid-request, then refused
        assert all(r[4] is not None for r in rows if r[1] == "ok")
        for title, _status, attempts, error, response in failed.values():
            assert attempts == 3 and response is None, (title, attempts)
            # The cause, not just the SDK's generic "Connection error.": refused, or cut off mid-request.
            assert error.startswith("connection error: "), error
            assert "refused" in error.lower(), error
        decided = _counts(con)
        assert decided["synth_queries"] + decided["synth_rejections"] == ANSWER_FIRST

    # The endpoint is back (same port): the rerun sends exactly the requests that failed, each once.
    second = EndpointProcess(tmp_path, "second", answer_first=-1, port=first.port)
    try:
        rep2, code2, _ = generate_once(second.url)
        resent = second.requests()
        # A third run has nothing left to send.
        rep3, code3, _ = generate_once(second.url)
        assert second.requests() == resent
    finally:
        second.kill()
    assert sorted(resent) == sorted(failed)
    if via == "cli":
        assert (code2, code3) == (0, 0)
    else:
        assert (rep2.status, rep2.n_cached, rep2.n_sent, rep2.n_errors) == (
            "complete", ANSWER_FIRST, planned - ANSWER_FIRST, 0,
        )  # fmt: skip
        assert (rep3.status, rep3.n_cached, rep3.n_sent) == ("complete", planned, 0)
    with Warehouse(path, read_only=True) as wh:
        con = wh.con
        counts = _counts(con)
        statuses = con.execute("SELECT status FROM synth_runs ORDER BY started_at").fetchall()
        assert statuses == [("partial",), ("complete",), ("complete",)]
        assert con.execute("SELECT count(*) FROM synth_requests WHERE status = 'ok'").fetchone()[0] == planned
        n_distinct = con.execute(
            "SELECT count(DISTINCT doc_id) FROM (SELECT doc_id FROM synth_queries UNION ALL "
            "SELECT doc_id FROM synth_rejections)"
        ).fetchone()[0]
    # No duplicated row anywhere: one request row and one decision (accepted or rejected) per planned request.
    assert counts["synth_requests"] == planned and counts["synth_runs"] == 3
    assert counts["synth_queries"] + counts["synth_rejections"] == planned == n_distinct
    assert counts["pairs"] == counts["synth_queries"] == sum(1 for d in DOCS if d[4] == "ok")
