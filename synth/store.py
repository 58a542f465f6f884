"""The synth tables in the warehouse (namespace "synth") and every read/write of them.

- `synth_requests`: the request cache. Key = sha256 of (model, messages, params); a row with status 'ok'
  is never sent again, which is what makes a rerun after a crash free. Rows are written as each response
  arrives, not at the end of a run.
- `synth_queries`: accepted queries with their document, paragraph span and prompt version.
- `synth_rejections`: rejected generations with their reason.
- `synth_runs`: one row per run: configuration (never the API key), counts, tokens, cost, stop reason.
Accepted queries also go to the core `pairs` table as kind='synthetic' (the contract training reads).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from m3core.data.examples import Example, write_jsonl
from m3core.data.export import SPLITS, SplitSpec

NAMESPACE = "synth"

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_synth_tables",
        """
        CREATE TABLE synth_requests (
            request_key VARCHAR PRIMARY KEY,  -- sha256(model, messages, params)
            model VARCHAR,
            base_url VARCHAR,                 -- without credentials
            prompt_version VARCHAR,
            messages VARCHAR,                 -- JSON
            params VARCHAR,                   -- JSON
            status VARCHAR,                   -- ok | error
            response VARCHAR,                 -- the model's reply text
            structured BOOLEAN,               -- whether JSON-schema output was requested
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s DOUBLE,
            attempts INTEGER,
            error VARCHAR,
            run_id VARCHAR,
            created_at TIMESTAMP,
            updated_at TIMESTAMP
        );
        CREATE TABLE synth_queries (
            query_id VARCHAR PRIMARY KEY,     -- = request_key: one accepted query per request
            request_key VARCHAR,
            doc_id VARCHAR,
            lang VARCHAR,                     -- the document's language
            query VARCHAR,
            query_lang VARCHAR,
            query_lang_conf DOUBLE,
            para_start INTEGER,               -- character span of the paragraph in documents.text
            para_end INTEGER,
            paragraph VARCHAR,
            model VARCHAR,
            prompt_version VARCHAR,
            pair_id VARCHAR,
            run_id VARCHAR,
            created_at TIMESTAMP
        );
        CREATE TABLE synth_rejections (
            rejection_id VARCHAR PRIMARY KEY, -- = request_key
            request_key VARCHAR,
            doc_id VARCHAR,
            lang VARCHAR,
            reason VARCHAR,
            detail VARCHAR,
            candidate VARCHAR,                -- the parsed query, if any
            response VARCHAR,                 -- the raw reply
            para_start INTEGER,
            para_end INTEGER,
            model VARCHAR,
            prompt_version VARCHAR,
            run_id VARCHAR,
            created_at TIMESTAMP
        );
        CREATE TABLE synth_runs (
            run_id VARCHAR PRIMARY KEY,
            model VARCHAR,
            base_url VARCHAR,
            prompt_version VARCHAR,
            config VARCHAR,                   -- JSON of SynthConfig (holds no secret)
            status VARCHAR,                   -- running | complete | stopped | failed
            stop_reason VARCHAR,
            n_planned INTEGER,
            n_cached INTEGER,                 -- answered from synth_requests
            n_sent INTEGER,                   -- new requests sent this run
            n_errors INTEGER,
            n_accepted INTEGER,
            n_rejected INTEGER,
            prompt_tokens BIGINT,
            completion_tokens BIGINT,
            cost_usd DOUBLE,
            seconds DOUBLE,
            started_at TIMESTAMP,
            finished_at TIMESTAMP
        );
        """,
    ),
]


def _exec(con: duckdb.DuckDBPyConnection, sql: str, row: dict[str, Any]) -> None:
    """Execute with named parameters; DuckDB rejects unused names, so pass only those the SQL uses."""
    names = set(re.findall(r"\$([a-z_]+)", sql))
    con.execute(sql, {k: v for k, v in row.items() if k in names})


def ensure_schema(con_owner: Any) -> None:
    """Apply the synth migrations through the warehouse's one migration mechanism."""
    con_owner.migrate(NAMESPACE, MIGRATIONS)


@dataclass
class CachedResponse:
    status: str
    response: str | None
    prompt_tokens: int
    completion_tokens: int


def cached(con: duckdb.DuckDBPyConnection, keys: Iterable[str]) -> dict[str, CachedResponse]:
    """Cache rows for `keys` (any status)."""
    keys = list(keys)
    if not keys:
        return {}
    rows = con.execute(
        "SELECT request_key, status, response, prompt_tokens, completion_tokens FROM synth_requests "
        "WHERE request_key IN (SELECT unnest(?::VARCHAR[]))",
        [keys],
    ).fetchall()
    return {r[0]: CachedResponse(r[1], r[2], int(r[3] or 0), int(r[4] or 0)) for r in rows}


def save_request(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Insert or update one cache row (an error row is overwritten by a later success)."""
    _exec(
        con,
        """
        INSERT INTO synth_requests VALUES (
            $request_key, $model, $base_url, $prompt_version, $messages, $params, $status, $response,
            $structured, $prompt_tokens, $completion_tokens, $latency_s, $attempts, $error, $run_id, now(), now())
        ON CONFLICT (request_key) DO UPDATE SET
            status = excluded.status, response = excluded.response, structured = excluded.structured,
            prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
            latency_s = excluded.latency_s, attempts = synth_requests.attempts + excluded.attempts,
            error = excluded.error, run_id = excluded.run_id, updated_at = now()
        """,
        row,
    )


def accepted_norms(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """request_key -> query of every accepted query (the dedup memory of earlier runs)."""
    return dict(con.execute("SELECT request_key, query FROM synth_queries").fetchall())


def decided_keys(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Requests whose generation was already validated (accepted or rejected)."""
    rows = con.execute(
        "SELECT request_key FROM synth_queries UNION SELECT request_key FROM synth_rejections"
    ).fetchall()
    return {r[0] for r in rows}


def pair_id_for(query: str, positive: str) -> str:
    """Content hash of (kind, query, positive), the core pairs table's identity."""
    blob = json.dumps(["synthetic", query, positive], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def save_accepted(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Store an accepted query and its training pair (idempotent: a rerun adds nothing)."""
    _exec(
        con,
        """
        INSERT OR IGNORE INTO synth_queries VALUES (
            $request_key, $request_key, $doc_id, $lang, $query, $query_lang, $query_lang_conf, $para_start,
            $para_end, $paragraph, $model, $prompt_version, $pair_id, $run_id, now())
        """,
        row,
    )
    _exec(
        con,
        """
        INSERT OR IGNORE INTO pairs (pair_id, kind, query, positive, lang, query_lang, lang_conf,
            query_lang_conf, source, location, doc_id, group_key, run_id, created_at)
        SELECT $pair_id, 'synthetic', $query, $paragraph, d.lang, $query_lang, d.lang_conf, $query_lang_conf,
            'synth:' || $model, coalesce(d.location, '') || '#chars=' || $para_start || '-' || $para_end,
            d.doc_id, d.group_key, $run_id, now()
        FROM documents d WHERE d.doc_id = $doc_id
        """,
        row,
    )


def save_rejected(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    _exec(
        con,
        """
        INSERT OR IGNORE INTO synth_rejections VALUES (
            $request_key, $request_key, $doc_id, $lang, $reason, $detail, $candidate, $response, $para_start,
            $para_end, $model, $prompt_version, $run_id, now())
        """,
        row,
    )


def start_run(
    con: duckdb.DuckDBPyConnection, run_id: str, model: str, base_url: str, version: str, config: str
) -> None:
    con.execute(
        "INSERT INTO synth_runs (run_id, model, base_url, prompt_version, config, status, started_at) "
        "VALUES (?, ?, ?, ?, ?, 'running', now())",
        [run_id, model, base_url, version, config],
    )


def finish_run(con: duckdb.DuckDBPyConnection, run_id: str, fields: dict[str, Any]) -> None:
    sets = ", ".join(f"{k} = ${k}" for k in fields)
    con.execute(
        f"UPDATE synth_runs SET {sets}, finished_at = now() WHERE run_id = $run_id",
        {**fields, "run_id": run_id},
    )


def acceptance_by_language(
    con: duckdb.DuckDBPyConnection, model: str | None = None, run_id: str | None = None
) -> list[tuple[str, int, int, float]]:
    """(lang, accepted, rejected, acceptance rate) over stored decisions, optionally for one model/run."""
    where, params = [], []
    if model is not None:
        where.append("model = ?")
        params.append(model)
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    cond = ("WHERE " + " AND ".join(where)) if where else ""
    rows = con.execute(
        f"""
        WITH d AS (
            SELECT lang, 1 AS ok FROM synth_queries {cond}
            UNION ALL SELECT lang, 0 AS ok FROM synth_rejections {cond}
        )
        SELECT lang, sum(ok)::INT, (count(*) - sum(ok))::INT, avg(ok) FROM d GROUP BY lang ORDER BY lang
        """,
        params * 2,
    ).fetchall()
    return [(r[0], r[1], r[2], float(r[3])) for r in rows]


def rejection_reasons(
    con: duckdb.DuckDBPyConnection, model: str | None = None, run_id: str | None = None
) -> list[tuple[str, str, int]]:
    """(lang, reason, count) of stored rejections, optionally for one model/run."""
    cond = " AND ".join(c for c, v in (("model = ?", model), ("run_id = ?", run_id)) if v is not None)
    params = [v for v in (model, run_id) if v is not None]
    return con.execute(
        f"SELECT lang, reason, count(*)::INT FROM synth_rejections {'WHERE ' + cond if cond else ''} "
        "GROUP BY ALL ORDER BY 1, 3 DESC",
        params,
    ).fetchall()


def export_training_jsonl(
    con: duckdb.DuckDBPyConnection,
    path: Any,
    positive: str = "paragraph",
    languages: list[str] | None = None,
    splits: Sequence[str] | None = None,
) -> int:
    """Write accepted queries as FlagEmbedding training lines; returns the number written.

    `positive="paragraph"` pairs the query with the paragraph it was written from; "document" with the whole
    long document (MLDR's long-document setting). `neg` is left empty for the hard-negative miner to fill.
    `splits` keeps the queries whose document's group falls in those splits (`SplitSpec.of(group_key)`; None: all):
    `("train",)` keeps every held-out document — a long-document eval set's answer — out of training.
    """
    if positive not in ("paragraph", "document"):
        raise ValueError(f"positive must be 'paragraph' or 'document', not {positive!r}")
    unknown = set(splits or ()) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}: expected some of {list(SPLITS)}")
    col = "q.paragraph" if positive == "paragraph" else "d.text"
    cond, params = "", []
    if languages:
        cond, params = "WHERE q.lang IN (SELECT unnest(?::VARCHAR[]))", [languages]
    rows = con.execute(
        f"SELECT q.query, {col}, coalesce(d.group_key, d.doc_id) FROM synth_queries q JOIN documents d "
        f"USING (doc_id) {cond} ORDER BY q.query_id",
        params,
    ).fetchall()
    if splits is not None:
        split = SplitSpec()
        rows = [r for r in rows if split.of(r[2]) in splits]
    write_jsonl((Example(query=query, pos=[pos]) for query, pos, _ in rows), path)
    return len(rows)


def mean_tokens(
    con: duckdb.DuckDBPyConnection, model: str | None = None, run_id: str | None = None
) -> tuple[float, float, float, int]:
    """(mean prompt tokens, mean completion tokens, completion tokens/s, n) over successful requests.

    With `run_id`: the requests whose generations that run decided (cached ones included).
    """
    cond, params = "", []
    if model:
        cond, params = "AND model = ?", [model]
    if run_id:
        cond += (
            " AND request_key IN (SELECT request_key FROM synth_queries WHERE run_id = ? "
            "UNION ALL SELECT request_key FROM synth_rejections WHERE run_id = ?)"
        )
        params += [run_id, run_id]
    row = con.execute(
        "SELECT coalesce(avg(prompt_tokens), 0), coalesce(avg(completion_tokens), 0), "
        "coalesce(sum(completion_tokens) / nullif(sum(latency_s), 0), 0), count(*)::INT "
        f"FROM synth_requests WHERE status = 'ok' {cond}",
        params,
    ).fetchone()
    return float(row[0]), float(row[1]), float(row[2]), int(row[3])


def forget_decisions(con: duckdb.DuckDBPyConnection, model: str) -> None:
    """Drop a model's accepted/rejected decisions (and its synthetic pairs) so the cached replies are
    validated again by the next run — for measuring a changed validator without paying for generation."""
    con.execute("DELETE FROM synth_queries WHERE model = ?", [model])
    con.execute("DELETE FROM synth_rejections WHERE model = ?", [model])
    con.execute("DELETE FROM pairs WHERE kind = 'synthetic' AND source = ?", [f"synth:{model}"])
