"""Fault tests: a real OpenAI-compatible HTTP server on 127.0.0.1 (stdlib, in a thread) that answers 429 with
Retry-After, 500, malformed JSON and too slowly. The run must retry, end with the right counts, keep the
API key out of every log/table/file, and a rerun must make zero new successful calls."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from m3core.data.warehouse import Warehouse
from synth import generate, store
from synth.client import FatalEndpointError
from synth.config import BudgetConfig, EndpointConfig, SelectionConfig, SynthConfig
from synth.prompts import EXAMPLES

SECRET = "sk-test-7f3c9a1e5b2d48c6-DO-NOT-LEAK"

# (doc title, lang, paragraph text, what the server answers once the faults are over, expected outcome)
FILLER = {
    "de": "Weitere Hinweise zur Benutzung stehen in der Dokumentation des Pakets und in den Beispielen. ",
    "fr": "D'autres remarques sur l'utilisation figurent dans la documentation du paquet et les exemples. ",
    "es": "Hay más notas sobre el uso en la documentación del paquete y en los ejemplos incluidos. ",
}
DOCS = [
    ("tarfix", "de", "Mit der Option --extract entpackt tar alle Dateien eines Archivs in das aktuelle Verzeichnis.",
     '{"question": "Mit welcher Option entpackt man bei tar ein Archiv ins aktuelle Verzeichnis?"}', "ok"),
    ("lsfix", "fr", "La commande ls affiche le contenu des répertoires, triés par ordre alphabétique par défaut.",
     '{"question": "Dans quel ordre la commande ls trie-t-elle le contenu des répertoires par défaut ?"}', "ok"),
    ("grepfix", "es", "La opción -c de grep cuenta las líneas que coinciden en lugar de mostrarlas en pantalla.",
     'Claro: {"question": "¿Qué opción de grep cuenta las líneas que coinciden sin mostrarlas?"}', "ok"),
    ("cpfix", "de", "Der Befehl cp kopiert Dateien und Verzeichnisse; mit -r werden Verzeichnisse rekursiv kopiert.",
     '{"question": "How do I copy directories recursively with cp?"}', "wrong-language"),
    ("rmfix", "fr", "La commande rm supprime des fichiers; avec l'option -i elle demande une confirmation avant chaque suppression.",
     '{"question": "La commande rm supprime des fichiers ?"}', "copied-span"),
    ("mvfix", "es", "El programa mv mueve archivos; para contar las líneas que coinciden se usa la opción -c de grep.",
     '{"question": "¿Qué opción de grep cuenta las líneas que coinciden sin mostrarlas?"}', "duplicate"),
    ("catfix", "de", "Das Programm cat gibt den Inhalt von Dateien hintereinander auf der Standardausgabe aus.",
     '{"question": ""}', "empty"),
    ("dffix", "de", "Das Programm df zeigt an, wie viel Speicherplatz auf den eingehängten Dateisystemen frei ist.",
     '{"question": "Wie kocht man eine gute Gemüsesuppe im Winter?"}', "off-topic"),
    ("lnfix", "fr", "La commande ln crée des liens entre fichiers; l'option -s crée des liens symboliques.",
     '{"question": "' + EXAMPLES["fr"][1] + '"}', "prompt-echo"),
]  # fmt: skip
# Faults per document title, served on successive attempts before the good answer.
FAULTS = {"tarfix": ["429"], "lsfix": ["500", "500"], "grepfix": ["malformed"], "cpfix": ["slow"],
          "rmfix": ["500"], "catfix": ["429", "malformed"]}  # fmt: skip
RETRY_AFTER_S = 1.0


class FakeLLM(ThreadingHTTPServer):
    """Records every request; answers per the fault plan."""

    daemon_threads = True

    def __init__(self, answers: dict[str, str], faults: dict[str, list[str]], always_500: set[str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers, self.faults, self.always_500 = answers, faults, always_500
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.log: list[tuple[str, str, float]] = []  # (title, outcome, time)
        self.auth: set[str] = set()
        self.successes = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeLLM

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        srv = self.server
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = req["messages"][-1]["content"]
        title = next(t for t in srv.answers if t in prompt)
        with srv.lock:
            srv.auth.add(self.headers.get("Authorization", ""))
            n = srv.attempts.get(title, 0)
            srv.attempts[title] = n + 1
            plan = srv.faults.get(title, [])
            fault = "500" if title in srv.always_500 else (plan[n] if n < len(plan) else "ok")
            srv.log.append((title, fault, time.monotonic()))
        if fault == "429":
            self._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": f"{RETRY_AFTER_S:g}"})
        elif fault == "500":
            self._send(500, b'{"error": {"message": "boom"}}')
        elif fault == "malformed":
            self._send(200, b'{"id": "x", "choices": [{"message": {"content": "tru')
        elif fault == "slow":
            time.sleep(1.5)  # past the client's 0.5 s timeout
            self._send(200, _completion(srv.answers[title]))
        else:
            with srv.lock:
                srv.successes += 1
            self._send(200, _completion(srv.answers[title]))


def _completion(content: str) -> bytes:
    return json.dumps({
        "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }).encode()  # fmt: skip


@pytest.fixture
def fake_llm():
    servers: list[FakeLLM] = []

    def make(faults=FAULTS, always_500=frozenset()) -> FakeLLM:
        srv = FakeLLM({d[0]: d[3] for d in DOCS}, dict(faults), set(always_500))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def warehouse(tmp_path: Path):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        add_docs(wh)
        yield wh


def add_docs(wh: Warehouse) -> None:
    """The test documents, one candidate paragraph each (the span is predictable)."""
    for title, lang, para, _, _ in DOCS:
        text = f"{title}\n\n{para} {FILLER[lang]}"  # one candidate paragraph: the span is predictable
        wh.con.execute(
            "INSERT INTO documents (doc_id, source, location, lang, lang_conf, title, text, n_chars, group_key) "
            "VALUES (?, 'test', ?, ?, 1.0, ?, ?, ?, ?)",
            [f"doc-{title}", f"/test/{title}", lang, title, text, len(text), title],
        )


def answering(code: int, body) -> ThreadingHTTPServer:
    """A loopback server answering every POST with `code` and the JSON `body(request headers)`; started."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            data = json.dumps(body(self.headers)).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _config(url: str, **budget: object) -> SynthConfig:
    return SynthConfig(
        endpoint=EndpointConfig(base_url=url, model="fake", timeout_s=0.5, backoff_base_s=0.01, backoff_max_s=0.05,
                                concurrency=3, max_attempts=4, api_key_env="M3_TEST_SYNTH_KEY"),
        selection=SelectionConfig(per_language=10, min_tokens=20, paragraph_min_chars=60, paragraph_max_chars=400),
        budget=BudgetConfig(price_input_per_m=0.15, price_output_per_m=0.60, **budget),
    )  # fmt: skip


def _expected_reason(title: str) -> str:
    return next(d[4] for d in DOCS if d[0] == title)


def test_faults_retry_counts_and_rerun_is_free(fake_llm, warehouse, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("M3_TEST_SYNTH_KEY", SECRET)  # the environment, not the client, is set
    caplog.set_level(logging.DEBUG)
    srv = fake_llm()
    cfg = _config(srv.url)
    rep = generate.run(cfg, warehouse, progress=False)

    assert rep.status == "complete", rep.message
    assert (rep.n_planned, rep.n_sent, rep.n_cached, rep.n_errors) == (len(DOCS), len(DOCS), 0, 0)
    n_ok = sum(1 for d in DOCS if d[4] == "ok")
    assert (rep.n_accepted, rep.n_rejected) == (n_ok, len(DOCS) - n_ok)
    assert srv.successes == len(DOCS)  # (the too-slow answer is not counted: the client had given up)
    # Every document got 1 + its number of faults attempts
    assert srv.attempts == {d[0]: 1 + len(FAULTS.get(d[0], [])) for d in DOCS}
    # Retry-After was honoured: the retry after a 429 came no sooner than the server asked
    times = [t for title, _, t in srv.log if title == "tarfix"]
    assert times[1] - times[0] >= RETRY_AFTER_S * 0.95
    # The key was sent to the server ...
    assert srv.auth == {f"Bearer {SECRET}"}

    con = warehouse.con
    reasons = dict(
        con.execute(
            "SELECT d.title, r.reason FROM synth_rejections r JOIN documents d USING (doc_id)"
        ).fetchall()
    )
    # grepfix and mvfix get the same question: whichever is validated second is the duplicate.
    dup = {"grepfix", "mvfix"}
    assert {t: r for t, r in reasons.items() if t not in dup} == {
        d[0]: d[4] for d in DOCS if d[4] != "ok" and d[0] not in dup
    }
    assert [reasons.get(t) for t in sorted(dup)].count("duplicate") == 1 and len(dup & set(reasons)) == 1
    attempts = dict(con.execute("SELECT d.title, q.attempts FROM synth_requests q JOIN documents d ON "
                                "q.messages LIKE '%' || d.title || '%'").fetchall())  # fmt: skip
    assert attempts == srv.attempts
    # Accepted queries are in pairs as kind='synthetic' with their document and span.
    pairs = con.execute("SELECT p.query, p.positive, p.doc_id, p.lang, q.para_start, q.para_end, d.text "
                        "FROM pairs p JOIN synth_queries q USING (pair_id) JOIN documents d ON d.doc_id = p.doc_id "
                        "WHERE p.kind = 'synthetic'").fetchall()  # fmt: skip
    assert len(pairs) == n_ok
    for query, positive, _doc_id, _lang, start, end, text in pairs:
        assert text[start:end] == positive and query not in positive
    tokens = con.execute(
        "SELECT prompt_tokens, completion_tokens, cost_usd, status FROM synth_runs"
    ).fetchone()
    assert tokens[:2] == (100 * len(DOCS), 20 * len(DOCS))
    assert tokens[2] == pytest.approx((100 * 0.15 + 20 * 0.60) * len(DOCS) / 1e6)
    by_lang = {lang: (a, r) for lang, a, r, _ in rep.by_language}
    assert by_lang == {"de": (1, 3), "es": (1, 1), "fr": (1, 2)}

    # Rerun: nothing is sent, nothing is decided twice.
    successes, total = srv.successes, sum(srv.attempts.values())
    rep2 = generate.run(cfg, warehouse, progress=False)
    assert (rep2.status, rep2.n_sent, rep2.n_cached, rep2.n_accepted, rep2.n_rejected) == (
        "complete",
        0,
        len(DOCS),
        0,
        0,
    )
    assert (srv.successes, sum(srv.attempts.values())) == (successes, total)
    assert con.execute("SELECT count(*) FROM pairs WHERE kind = 'synthetic'").fetchone()[0] == n_ok

    # Export, then: the key is nowhere — logs, any warehouse table, the export, the run message.
    out = tmp_path / "train.jsonl"
    assert store.export_training_jsonl(con, out) == n_ok
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(set(x) == {"query", "pos", "neg"} and len(x["pos"]) == 1 for x in lines)
    assert SECRET not in caplog.text and SECRET not in out.read_text() and SECRET not in rep.message
    for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
        dump = con.execute(f"SELECT * FROM {table}").fetchall()
        assert SECRET not in repr(dump), table
    con.execute("CHECKPOINT")
    assert SECRET.encode() not in Path(warehouse.path).read_bytes()


def test_persistent_errors_are_counted_and_retried_on_rerun(fake_llm, warehouse):
    srv = fake_llm(faults={}, always_500={"lsfix"})
    cfg = _config(srv.url)
    rep = generate.run(cfg, warehouse, progress=False)
    assert (rep.status, rep.n_sent, rep.n_errors) == ("partial", len(DOCS), 1)
    assert "To continue" in rep.message
    assert srv.attempts["lsfix"] == cfg.endpoint.max_attempts
    row = warehouse.con.execute(
        "SELECT status, attempts, error FROM synth_requests WHERE status <> 'ok'"
    ).fetchone()
    assert row[0] == "error" and row[1] == cfg.endpoint.max_attempts and "500" in row[2]
    # The server recovers: the rerun sends only the failed request.
    srv.always_500.clear()
    successes = srv.successes
    rep2 = generate.run(cfg, warehouse, progress=False)
    assert (rep2.n_sent, rep2.n_cached, rep2.n_errors, rep2.n_accepted) == (1, len(DOCS) - 1, 0, 1)
    assert srv.successes == successes + 1


def test_budget_cap_stops_cleanly_and_rerun_continues(fake_llm, warehouse):
    srv = fake_llm(faults={})
    rep = generate.run(_config(srv.url, max_requests=3), warehouse, progress=False)
    assert (rep.status, rep.n_sent) == ("stopped", 3)
    assert "request cap (3)" in rep.message and "To continue" in rep.message
    assert srv.successes == 3
    # Token cap: each request's worst case is reserved up front, so the cap is never overshot.
    rep_t = generate.run(_config(srv.url, max_tokens=1), warehouse, progress=False)
    assert (rep_t.status, rep_t.n_sent) == ("stopped", 0) and "token cap" in rep_t.message
    rep2 = generate.run(_config(srv.url), warehouse, progress=False)
    assert (rep2.status, rep2.n_cached, rep2.n_sent) == ("complete", 3, len(DOCS) - 3)
    assert srv.successes == len(DOCS)  # no successful call was made twice


def test_refused_key_stops_the_run_without_showing_it(warehouse, monkeypatch, caplog):
    """401 from the endpoint: a fatal, clear error that names the endpoint but not the key."""

    # As OpenAI does: the refused key, echoed back in the message.
    srv = answering(
        401, lambda h: {"error": {"message": f"Incorrect API key provided: {h.get('Authorization')}"}}
    )
    monkeypatch.setenv("M3_TEST_SYNTH_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(FatalEndpointError, match="HTTP 401") as err:
            generate.run(_config(f"http://127.0.0.1:{srv.server_port}/v1"), warehouse, progress=False)
    finally:
        srv.shutdown()
        srv.server_close()
    assert SECRET not in str(err.value) and SECRET not in caplog.text
    assert "Incorrect API key provided: Bearer ***" in str(err.value)  # the echo, redacted
    status, reason = warehouse.con.execute("SELECT status, stop_reason FROM synth_runs").fetchone()
    assert status == "failed" and "Bearer ***" in reason and SECRET not in reason
    warehouse.con.execute("CHECKPOINT")
    assert SECRET.encode() not in Path(warehouse.path).read_bytes()


def test_credentials_in_the_base_url_are_refused_without_repeating_them():
    with pytest.raises(ValueError, match="must not carry credentials") as err:
        EndpointConfig(base_url=f"http://user:{SECRET}@127.0.0.1:9/v1")
    assert SECRET not in str(err.value)


@pytest.mark.parametrize(
    ("failing", "status", "code"),
    [(set(), "complete", 0), ({"lsfix"}, "partial", 4), ({d[0] for d in DOCS}, "failed", 5)],
)
def test_generate_exit_code_says_whether_requests_failed(fake_llm, tmp_path, failing, status, code):
    """`m3 synth generate`: 0 all answered, 4 some failed after their retries, 5 none answered."""
    import yaml

    from m3core.cli import main

    srv = fake_llm(faults={}, always_500=failing)
    config = tmp_path / "synth.yaml"
    config.write_text(yaml.safe_dump(_config(srv.url).model_dump(mode="json")))
    path = tmp_path / "cli.duckdb"
    with Warehouse(path) as wh:
        add_docs(wh)
    assert main(["-q", "synth", "--warehouse", str(path), "generate", "--config", str(config)]) == code
    with Warehouse(path, read_only=True) as wh:
        assert (
            wh.con.execute("SELECT status FROM synth_runs ORDER BY started_at DESC").fetchone()[0] == status
        )


def test_a_400_that_is_not_about_the_format_keeps_the_structured_dialect():
    """Only a refusal naming the response format steps the dialect down; a too-long prompt is just an error."""
    from synth.client import ChatClient
    from synth.config import GenerationParams

    srv = answering(
        400, lambda h: {"error": {"message": "This model's maximum context length is 2048 tokens"}}
    )
    try:
        client = ChatClient(EndpointConfig(base_url=f"http://127.0.0.1:{srv.server_port}/v1", max_attempts=2))
        before = list(client._formats)
        result = client.complete([{"role": "user", "content": "hi"}], GenerationParams())
        assert result.status == "error" and "maximum context length" in result.error
        assert client._formats == before and client.structured
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_ctrl_c_stops_promptly_without_waiting_for_retries(fake_llm, tmp_path):
    """SIGINT to `m3 synth generate` while every request is in a long retry backoff: the process exits at once
    (it would wait 30-60 s for the retries otherwise), the run is recorded as stopped, a rerun completes."""
    import signal
    import subprocess
    import sys

    import yaml

    from m3core.cli import main

    srv = fake_llm(faults={}, always_500={d[0] for d in DOCS})
    cfg = _config(srv.url)
    # Each request: 5 attempts, 4 backoffs of 7.5-15 s each; the ones in flight at Ctrl-C have >= 30 s to go.
    cfg.endpoint = cfg.endpoint.model_copy(
        update={"max_attempts": 5, "backoff_base_s": 15.0, "backoff_max_s": 15.0, "timeout_s": 5.0}
    )
    config = tmp_path / "synth.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    path = tmp_path / "cli.duckdb"
    with Warehouse(path) as wh:
        add_docs(wh)
    cmd = [sys.executable, "-m", "m3core.cli", "-q", "synth", "--warehouse", str(path), "generate",
           "--config", str(config)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while sum(srv.attempts.values()) < cfg.endpoint.concurrency:  # every worker is now in its backoff
            assert proc.poll() is None and time.monotonic() < deadline, "the run never sent its requests"
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {time.monotonic() - t0:.1f} s after Ctrl-C: it waits for the retries")
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert took < 8, f"exited {took:.1f} s after Ctrl-C"
    # As before: KeyboardInterrupt propagates out of the CLI (the interpreter ends by SIGINT).
    assert proc.returncode == -signal.SIGINT and "KeyboardInterrupt" in err, (proc.returncode, err[-2000:])
    # No new attempt started after the interrupt (the in-flight ones were cut short in their backoff).
    assert sum(srv.attempts.values()) == cfg.endpoint.concurrency
    with Warehouse(path, read_only=True) as wh:
        status, reason, n_sent = wh.con.execute(
            "SELECT status, stop_reason, n_sent FROM synth_runs"
        ).fetchone()
    assert (status, reason, n_sent) == ("stopped", "KeyboardInterrupt", 0)

    # The endpoint recovers: the rerun sends every request once and completes.
    srv.always_500.clear()
    assert main(["-q", "synth", "--warehouse", str(path), "generate", "--config", str(config)]) == 0
    assert srv.successes == len(DOCS)
    with Warehouse(path, read_only=True) as wh:
        runs = wh.con.execute("SELECT status FROM synth_runs ORDER BY started_at").fetchall()
        n_ok = wh.con.execute("SELECT count(*) FROM synth_requests WHERE status = 'ok'").fetchone()[0]
    assert (runs, n_ok) == ([("stopped",), ("complete",)], len(DOCS))
