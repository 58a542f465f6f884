"""A synthetic-query run: select long documents, pick a paragraph each, ask the LLM, validate, store.

Resumable by construction: every planned request has a content key; responses already in
`synth_requests` with status 'ok' are reused, never re-sent, and each response is written the moment it
arrives, so a crash loses at most the requests in flight. A rerun with the same configuration therefore
continues where the last one stopped (after a crash, a budget cap or Ctrl-C) and re-validates nothing
that was already decided.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import duckdb
from pydantic import SecretStr
from tqdm.auto import tqdm

from m3core.data.export import SplitSpec
from synth import store
from synth.budget import Budget, Usage, estimate_prompt_tokens
from synth.client import CallResult, ChatClient, FatalEndpointError, request_key
from synth.config import SelectionConfig, SynthConfig
from synth.prompts import PROMPT_VERSION, base_lang, build_messages
from synth.validate import Validator, normalize

log = logging.getLogger(__name__)

# Approximate tokens: words, and each CJK/kana character on its own (no tokenizer needed to filter docs).
_TOKEN_RE = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]|\w+")


def approx_tokens(text: str) -> int:
    """Word count, counting each CJK character as a word.

    >>> approx_tokens("tar packt Dateien"), approx_tokens("列出目录内容")
    (3, 6)
    """
    return len(_TOKEN_RE.findall(text))


@dataclass(frozen=True)
class Item:
    """One planned request: a paragraph of a document and the messages about it."""

    doc_id: str
    lang: str
    title: str
    para_start: int
    para_end: int
    paragraph: str
    messages: list[dict[str, str]]
    key: str


@dataclass
class RunReport:
    """What a run did; `message` says how it ended and how to continue."""

    run_id: str
    status: str  # complete | partial (some requests failed) | failed (none answered) | stopped (cap, Ctrl-C)
    n_planned: int = 0
    n_cached: int = 0
    n_sent: int = 0
    n_errors: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    usage: Usage = field(default_factory=Usage)
    seconds: float = 0.0
    stop_reason: str | None = None
    by_language: list[tuple[str, int, int, float]] = field(default_factory=list)
    message: str = ""

    @property
    def completion_tokens_per_s(self) -> float:
        """Generated tokens per wall-clock second over this run's new requests."""
        return self.usage.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def paragraph_spans(text: str, min_chars: int, max_chars: int) -> list[tuple[int, int]]:
    """Candidate paragraph spans: blank-line blocks, short neighbours merged, long ones cut at line ends.

    >>> t = "a" * 50 + "\\n\\n" + "b" * 60 + "\\n\\n" + "c" * 300
    >>> [(s, e) for s, e in paragraph_spans(t, 100, 200)]
    [(0, 112), (114, 314), (314, 414)]
    """
    blocks: list[tuple[int, int]] = []
    for m in re.finditer(r"\S(?:.*?\S)?(?=\n[ \t]*\n|\s*\Z)", text, flags=re.DOTALL):
        s, e = m.span()
        while e - s > max_chars:  # cut an over-long block at the last line break (or space) within bounds
            cut = text.rfind("\n", s + min_chars, s + max_chars)
            if cut <= s:
                cut = text.rfind(" ", s + min_chars, s + max_chars)
            if cut <= s:
                cut = s + max_chars
            blocks.append((s, cut))
            s = cut
            while s < e and text[s].isspace():
                s += 1
        if e > s:
            blocks.append((s, e))
    spans: list[tuple[int, int]] = []
    cur: tuple[int, int] | None = None
    for s, e in blocks:
        if cur is None:
            cur = (s, e)
        elif e - cur[0] <= max_chars and cur[1] - cur[0] < min_chars:
            cur = (cur[0], e)  # merge a short paragraph with the next one
        else:
            if cur[1] - cur[0] >= min_chars:
                spans.append(cur)
            cur = (s, e)
    if cur is not None and cur[1] - cur[0] >= min_chars:
        spans.append(cur)
    return spans


def choose_paragraph(text: str, doc_id: str, sel: SelectionConfig) -> tuple[int, int] | None:
    """The seeded choice of one paragraph span of a document (same seed and document: same span)."""
    spans = paragraph_spans(text, sel.paragraph_min_chars, sel.paragraph_max_chars)
    if not spans:
        return None
    return random.Random(f"{sel.seed}:{doc_id}").choice(spans)


def select_documents(con: duckdb.DuckDBPyConnection, sel: SelectionConfig) -> list[tuple[str, str, str, str]]:
    """(doc_id, lang, title, text) of up to `per_language` long documents per language, in seeded order."""
    where = ["n_chars >= ?"]
    params: list[Any] = [sel.min_tokens]
    if sel.languages:
        where.append("lower(split_part(replace(lang, '-', '_'), '_', 1)) IN (SELECT unnest(?::VARCHAR[]))")
        params.append([base_lang(x) for x in sel.languages])
    if sel.source:
        where.append("source = ?")
        params.append(sel.source)
    rows = con.execute(
        f"SELECT doc_id, lang, coalesce(title, ''), text, coalesce(group_key, doc_id) FROM documents "
        f"WHERE {' AND '.join(where)} ORDER BY lang, md5(? || doc_id)",
        [*params, str(sel.seed)],
    ).fetchall()
    chosen: list[tuple[str, str, str, str]] = []
    per_lang: dict[str, int] = {}
    split = SplitSpec()
    for doc_id, lang, title, text, group_key in rows:
        if per_lang.get(lang, 0) >= sel.per_language or approx_tokens(text) < sel.min_tokens:
            continue
        if sel.splits and split.of(group_key) not in sel.splits:
            continue
        per_lang[lang] = per_lang.get(lang, 0) + 1
        chosen.append((doc_id, lang, title, text))
    for lang in sel.languages:
        if not any(base_lang(lang) == base_lang(x) for x in per_lang):
            log.warning("no document in language %r with at least %d tokens", lang, sel.min_tokens)
    return chosen


def plan(con: duckdb.DuckDBPyConnection, config: SynthConfig) -> list[Item]:
    """The requests a run makes: one per selected document with a usable paragraph."""
    structured = config.endpoint.structured_output != "none"
    items = []
    for doc_id, lang, title, text in select_documents(con, config.selection):
        span = choose_paragraph(text, doc_id, config.selection)
        if span is None:
            log.info("document %s (%s) has no paragraph of %d-%d chars; skipped", doc_id, lang,
                     config.selection.paragraph_min_chars, config.selection.paragraph_max_chars)  # fmt: skip
            continue
        paragraph = text[span[0] : span[1]]
        # The model sees the paragraph with man-page indentation removed; the stored span is exact.
        shown = "\n".join(line.strip() for line in paragraph.splitlines())
        messages = build_messages(lang, title, shown, example=config.params.prompt_example)
        key = request_key(config.endpoint.model, messages, config.params, structured)
        items.append(Item(doc_id, lang, title, span[0], span[1], paragraph, messages, key))
    return items


class _Run:
    """State of one run; all warehouse writes happen on the calling thread (DuckDB connection)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, config: SynthConfig, run_id: str) -> None:
        self.con, self.config, self.run_id = con, config, run_id
        self.report = RunReport(run_id=run_id, status="running")
        self.validator = Validator(
            config.validation, {normalize(q) for q in store.accepted_norms(con).values()}
        )
        self.decided = store.decided_keys(con)

    def record(self, item: Item, result: CallResult) -> None:
        ep = self.config.endpoint
        store.save_request(self.con, {
            "request_key": item.key, "model": ep.model, "base_url": ep.safe_base_url(),
            "prompt_version": PROMPT_VERSION, "messages": json.dumps(item.messages, ensure_ascii=False),
            "params": self.config.params.model_dump_json(), "status": result.status, "response": result.text,
            "structured": result.structured, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens, "latency_s": result.latency_s,
            "attempts": result.attempts, "error": result.error, "run_id": self.run_id,
        })  # fmt: skip
        if result.status == "ok":
            self.decide(item, result.text)
        else:
            self.report.n_errors += 1

    def decide(self, item: Item, text: str | None) -> None:
        if item.key in self.decided:
            return
        self.decided.add(item.key)
        verdict = self.validator.check(text, item.paragraph, item.lang, item.title)
        row = {
            "request_key": item.key, "doc_id": item.doc_id, "lang": item.lang, "para_start": item.para_start,
            "para_end": item.para_end, "model": self.config.endpoint.model, "prompt_version": PROMPT_VERSION,
            "run_id": self.run_id,
        }  # fmt: skip
        if verdict.accepted:
            assert verdict.query is not None
            self.report.n_accepted += 1
            store.save_accepted(self.con, {
                **row, "query": verdict.query, "query_lang": verdict.query_lang,
                "query_lang_conf": verdict.query_lang_conf, "paragraph": item.paragraph,
                "pair_id": store.pair_id_for(verdict.query, item.paragraph),
            })  # fmt: skip
        else:
            self.report.n_rejected += 1
            store.save_rejected(self.con, {
                **row, "reason": verdict.reason, "detail": verdict.detail, "candidate": verdict.query,
                "response": text,
            })  # fmt: skip


def run(
    config: SynthConfig,
    warehouse: Any,
    *,
    api_key: SecretStr | None = None,
    run_id: str | None = None,
    progress: bool | None = None,
) -> RunReport:
    """Generate, validate and store queries per `config` into `warehouse` (an open `m3core` Warehouse).

    `api_key` overrides the environment variable named in the config (flows pass a Prefect Secret's value).
    Stops cleanly at a budget cap; raises `FatalEndpointError` (after recording the run) if the endpoint
    refuses every request. On Ctrl-C it stops at once (no retry or backoff is waited for, only an attempt on
    the wire, at most `timeout_s`), records the run as stopped and re-raises the KeyboardInterrupt.
    """
    store.ensure_schema(warehouse)
    con = warehouse.con
    run_id = run_id or f"synth-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    ep = config.endpoint
    items = plan(con, config)
    state = _Run(con, config, run_id)
    rep = state.report
    rep.n_planned = len(items)
    store.start_run(con, run_id, ep.model, ep.safe_base_url(), PROMPT_VERSION, config.model_dump_json())
    cache = store.cached(con, [i.key for i in items])
    to_send = []
    for item in items:
        hit = cache.get(item.key)
        if hit is not None and hit.status == "ok":
            rep.n_cached += 1
            state.decide(item, hit.response)
        else:
            to_send.append(item)
    log.info("run %s: %d planned, %d cached, %d to send to %s (%s)", run_id, len(items), rep.n_cached,
             len(to_send), ep.safe_base_url(), ep.model)  # fmt: skip
    budget = Budget(config.budget)
    t0 = time.monotonic()
    error: BaseException | None = None
    show = progress if progress is not None else log.isEnabledFor(logging.INFO)
    bar = tqdm(total=len(to_send), desc="synth", unit="req", disable=not show or not to_send)
    try:
        with ChatClient(ep, api_key) as client:
            pool = ThreadPoolExecutor(ep.concurrency)
            pending: dict[Future[CallResult], tuple[Item, int]] = {}
            try:
                queue = iter(to_send)
                exhausted = False
                while True:
                    while not exhausted and rep.stop_reason is None and len(pending) < ep.concurrency:
                        item = next(queue, None)
                        if item is None:
                            exhausted = True
                            break
                        est = estimate_prompt_tokens(item.messages)
                        refused = budget.reserve(est, config.params.max_tokens)
                        if refused is not None:
                            rep.stop_reason = refused
                            break
                        pending[pool.submit(client.complete, item.messages, config.params)] = (item, est)
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        item, est = pending.pop(fut)
                        result = fut.result()  # FatalEndpointError propagates
                        _settle(state, budget, item, est, result)
                        bar.update(1)
            finally:
                # Normally nothing is pending here. On Ctrl-C or a fatal error: no new attempt and no backoff
                # sleep in any worker, queued calls cancelled; only an attempt on the wire (at most timeout_s) is
                # waited for, and an answer it brings is kept.
                client.stop()
                pool.shutdown(wait=True, cancel_futures=True)
                for fut, (item, est) in pending.items():
                    if fut.cancelled() or fut.exception() is not None or fut.result().interrupted:
                        continue
                    _settle(state, budget, item, est, fut.result())
    except (FatalEndpointError, KeyboardInterrupt) as err:
        error = err
    finally:
        bar.close()
        rep.seconds = time.monotonic() - t0
        rep.usage = budget.used
        rep.by_language = store.acceptance_by_language(con, model=ep.model)
        done_n = rep.n_cached + rep.n_sent - rep.n_errors
        if error is not None:
            rep.status = "failed" if isinstance(error, FatalEndpointError) else "stopped"
            rep.stop_reason = str(error) or type(error).__name__
        elif rep.stop_reason is not None:
            rep.status = "stopped"
        elif rep.n_errors and rep.n_errors == rep.n_sent:
            rep.status = "failed"  # every request sent failed after its retries: the endpoint answers nothing
        elif rep.n_errors:
            rep.status = "partial"
        else:
            rep.status = "complete"
        rep.message = _message(rep, done_n)
        store.finish_run(con, run_id, {
            "status": rep.status, "stop_reason": rep.stop_reason, "n_planned": rep.n_planned,
            "n_cached": rep.n_cached, "n_sent": rep.n_sent, "n_errors": rep.n_errors,
            "n_accepted": rep.n_accepted, "n_rejected": rep.n_rejected,
            "prompt_tokens": rep.usage.prompt_tokens, "completion_tokens": rep.usage.completion_tokens,
            "cost_usd": rep.usage.cost_usd, "seconds": rep.seconds,
        })  # fmt: skip
        (log.warning if rep.status != "complete" else log.info)("%s", rep.message)
    if isinstance(error, FatalEndpointError | KeyboardInterrupt):
        raise error
    return rep


def _settle(state: _Run, budget: Budget, item: Item, est: int, result: CallResult) -> None:
    """Account for and store one request's outcome."""
    budget.settle(est, state.config.params.max_tokens, result.prompt_tokens, result.completion_tokens)
    state.report.n_sent += 1
    state.record(item, result)


def _message(rep: RunReport, done_n: int) -> str:
    head = (
        f"run {rep.run_id} {rep.status}: {done_n}/{rep.n_planned} requests answered ({rep.n_cached} from cache, "
        f"{rep.n_sent} sent, {rep.n_errors} failed); {rep.n_accepted} accepted, {rep.n_rejected} rejected; "
        f"{rep.usage.prompt_tokens}+{rep.usage.completion_tokens} tokens, ${rep.usage.cost_usd:.4f}"
    )
    if rep.status == "complete" and rep.n_errors == 0:
        return head
    why = f" Stopped by {rep.stop_reason}." if rep.stop_reason else ""
    return (
        f"{head}.{why} To continue, run the same command again (answered requests are reused from the "
        "warehouse cache and cost nothing)"
        + (", with a higher cap" if "cap" in (rep.stop_reason or "") else "")
        + "."
    )


def generate_queries(
    config: SynthConfig,
    warehouse: Any,
    *,
    local_model: str | None = None,
    threads: int = 1,
    api_key: SecretStr | None = None,
    progress: bool | None = None,
) -> RunReport:
    """`run` as `m3 synth generate` and the `synthesize_queries` flow do it: with `local_model` (a name from
    `m3 llm list`, `"default"`, or a .gguf path) a local llama.cpp server is started for the run and the
    config's endpoint points at it (its other endpoint settings kept); otherwise the config's endpoint is used."""
    if not local_model:
        return run(config, warehouse, api_key=api_key, progress=progress)
    from synth import server

    name = server.DEFAULT_MODEL if local_model == "default" else local_model
    with server.LocalLLMServer(name, n_threads=threads) as srv:
        endpoint = srv.endpoint(**config.endpoint.model_dump(exclude={"base_url", "model"}))
        return run(config.model_copy(update={"endpoint": endpoint}), warehouse, progress=progress)
