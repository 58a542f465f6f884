"""The DuckDB warehouse: one file under the platform home holding documents, pairs, quarantine and runs.

Why DuckDB: a single embedded file (no server in the embedded default), columnar, and the SQL we write
runs unchanged over Parquet files on object storage at scale (see README "Data layer").

Schema is versioned and migrated, never recreated: every package registers ordered `(name, sql)`
migrations under its own namespace (`core` here; `synth`, `negatives` elsewhere) through
`Warehouse.migrate`; applied ones are recorded in `schema_migrations` and skipped on the next open.

Concurrency: DuckDB lets one process hold a file read-write. A second writer waits (retrying) up to
`lock_timeout` seconds and then fails with `WarehouseLockedError` naming the file and the holder.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from types import TracebackType

import duckdb

from m3core.paths import warehouse_path

log = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT_S = float(os.environ.get("M3_WAREHOUSE_LOCK_TIMEOUT", "60"))

# The core tables. Later migrations append to this list; never edit an applied entry.
CORE_MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_core_tables",
        """
        CREATE TABLE ingest_runs (
            run_id VARCHAR PRIMARY KEY,
            source VARCHAR,          -- source name(s) this run read
            params VARCHAR,          -- JSON of the run's configuration
            status VARCHAR,          -- running | ok | failed
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            n_read BIGINT,
            n_pairs BIGINT,          -- new pairs inserted
            n_documents BIGINT,      -- new documents inserted
            n_quarantined BIGINT,
            n_unchanged BIGINT,      -- records already in the warehouse (re-ingestion)
            seconds DOUBLE,
            error VARCHAR
        );
        CREATE TABLE documents (
            doc_id VARCHAR PRIMARY KEY,  -- content hash of (lang, normalized text)
            source VARCHAR,
            location VARCHAR,            -- file path (+ member), where it came from
            lang VARCHAR,                -- declared language (ISO 639-1 where possible)
            lang_conf DOUBLE,            -- language-ID confidence for the declared language
            detected_lang VARCHAR,
            title VARCHAR,
            text VARCHAR,
            n_chars INTEGER,
            group_key VARCHAR,           -- same key across languages (e.g. man page name): split unit
            meta VARCHAR,                -- JSON: source-specific fields (section, summary...)
            run_id VARCHAR,
            created_at TIMESTAMP
        );
        CREATE TABLE pairs (
            pair_id VARCHAR PRIMARY KEY,  -- content hash of (kind, query, positive)
            kind VARCHAR,                 -- translation | title-body | question-answer | synthetic
            query VARCHAR,
            positive VARCHAR,
            lang VARCHAR,                 -- language of the positive
            query_lang VARCHAR,           -- language of the query
            lang_conf DOUBLE,
            query_lang_conf DOUBLE,
            source VARCHAR,
            location VARCHAR,
            doc_id VARCHAR,               -- the document the positive came from, if any
            group_key VARCHAR,            -- split unit: equal keys always land in the same split
            run_id VARCHAR,
            created_at TIMESTAMP
        );
        CREATE TABLE quarantine (
            quarantine_id VARCHAR PRIMARY KEY,  -- hash of (source, location, reason): re-ingestion adds nothing
            source VARCHAR,
            location VARCHAR,
            reason VARCHAR,
            detail VARCHAR,
            lang VARCHAR,
            content VARCHAR,                    -- the rejected text (truncated), for inspection
            run_id VARCHAR,
            created_at TIMESTAMP
        );
        CREATE TABLE run_stats (
            run_id VARCHAR,
            source VARCHAR,
            lang VARCHAR,
            outcome VARCHAR,   -- pair | document | unchanged | quarantine:<reason>
            n BIGINT
        );
        CREATE INDEX pairs_lang ON pairs(lang);
        CREATE INDEX documents_lang ON documents(lang);
        """,
    ),
    (
        "0002_dedup_keys",
        """
        ALTER TABLE pairs ADD COLUMN near_key VARCHAR;     -- hash of case/punctuation-folded query+positive
        ALTER TABLE documents ADD COLUMN minhash BLOB;    -- MinHash signature (uint64 array) for near-dedup
        """,
    ),
]


class WarehouseLockedError(RuntimeError):
    """Another process holds the warehouse file for writing and did not release it in time."""


_LOCK_MESSAGE = re.compile(r"lock", re.IGNORECASE)


def _connect(path: Path, read_only: bool, lock_timeout: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + lock_timeout
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as err:
            if not _LOCK_MESSAGE.search(str(err)):
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                if "not a valid DuckDB database file" in str(err) or "Invalid Input Error" in str(err):
                    raise ValueError(f"warehouse {path}: not a DuckDB database file ({first})") from None
                raise
            if time.monotonic() >= deadline:
                raise WarehouseLockedError(
                    f"warehouse {path} is locked by another process (waited {lock_timeout:.0f} s): {err}"
                ) from err
            if delay == 0.05:  # once, not at every retry
                log.info(
                    "warehouse %s is locked by another process; waiting up to %.0f s", path, lock_timeout
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class Warehouse:
    """The DuckDB warehouse file. `.con` is the duckdb connection; core tables exist after opening.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d, Warehouse(pathlib.Path(d) / "w.duckdb") as wh:
    ...     wh.con.execute("SELECT count(*) FROM pairs").fetchone()[0]
    0
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        read_only: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> None:
        self.path = Path(path) if path is not None else warehouse_path()
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"warehouse {self.path} does not exist (run `m3 mine` first)")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = _connect(self.path, read_only, lock_timeout)
        if not read_only:
            self.migrate("core", CORE_MIGRATIONS)

    # -- migrations -------------------------------------------------------------------------------
    def migrate(self, namespace: str, migrations: list[tuple[str, str]]) -> list[str]:
        """Apply, in order and each in a transaction, the migrations of `namespace` not applied yet.

        Returns the names applied now. Versions are positions in the list (1-based): append new
        migrations, never reorder or edit applied ones (a changed name at an applied version is an error).
        """
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations("
            "namespace VARCHAR, version INTEGER, name VARCHAR, applied_at TIMESTAMP)"
        )
        done = dict(
            self.con.execute(
                "SELECT version, name FROM schema_migrations WHERE namespace = ?", [namespace]
            ).fetchall()
        )
        applied = []
        for version, (name, sql) in enumerate(migrations, start=1):
            if version in done:
                if done[version] != name:
                    raise ValueError(
                        f"warehouse {self.path}: migration {namespace} v{version} was applied as "
                        f"{done[version]!r} but is now {name!r}; append new migrations instead of editing"
                    )
                continue
            self.con.execute("BEGIN TRANSACTION")
            try:
                self.con.execute(sql)
                self.con.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?, now())", [namespace, version, name]
                )
                self.con.execute("COMMIT")
            except Exception:
                self.con.execute("ROLLBACK")
                raise
            log.info("warehouse %s: applied migration %s v%d %s", self.path, namespace, version, name)
            applied.append(name)
        return applied

    def schema_version(self, namespace: str = "core") -> int:
        """The highest applied migration version of `namespace` (0 if none)."""
        row = self.con.execute(
            "SELECT coalesce(max(version), 0) FROM schema_migrations WHERE namespace = ?", [namespace]
        ).fetchone()
        return int(row[0]) if row else 0

    def sample_texts(self, n: int) -> list[str]:
        """Up to `n` query and passage texts of `pairs`, sampled (e.g. to train a from-scratch tokenizer)."""
        rows = self.con.execute(
            "SELECT text FROM (SELECT query AS text FROM pairs UNION ALL SELECT positive FROM pairs) "
            f"USING SAMPLE {int(n)} ROWS"
        ).fetchall()
        return [r[0] for r in rows]

    def snapshot(self) -> str:
        """What the warehouse's pairs are now (`pairs=<count>@<latest created_at>`): a cache key for what is
        derived from them (a base model's tokenizer, a retrain's exports)."""
        n, latest = self.con.execute("SELECT count(*), max(created_at) FROM pairs").fetchone()
        return f"pairs={n}@{latest}"

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (releases the file lock)."""
        self.con.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Warehouse({str(self.path)!r}, read_only={self.read_only})"
