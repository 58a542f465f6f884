"""The mining pipeline: sources → clean → language ID → dedup → warehouse, with quarantine and run stats.

Workers (processes) read, clean and language-identify whole units (catalogs, page chunks); the parent
process alone writes to DuckDB (one writer) in Arrow batches: exact dedup is SQL against the warehouse,
so re-ingesting a source adds nothing (its records come back `unchanged`). On a cluster the units are
processed by tasks into Parquet shards instead (`m3core.data.shards`), and the same writer ingests them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, TypeVar

import pyarrow as pa

from m3core.data.clean import LengthLimits, check_text, normalize_text
from m3core.data.dedup import NearDuplicateIndex, minhash_signature, near_key
from m3core.data.langid import LanguageIdentifier
from m3core.data.records import Document, Pair, Record, Rejected
from m3core.data.sources import Source
from m3core.data.sources.spec import SourcesSpec
from m3core.data.warehouse import Warehouse

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class MineConfig:
    """How a mining run processes records (saved with the run in `ingest_runs.params`)."""

    workers: int = 2
    batch_size: int = 20_000
    limits: LengthLimits = field(default_factory=LengthLimits)
    lid_min_chars: int = 25
    lid_min_conf: float = 0.6
    lid_max_declared_conf: float = 0.05
    near_dup_threshold: float = 0.9
    max_per_language: int | None = None  # new pairs per (source, query language, language) this run
    derive_crosslingual: bool = True
    progress: bool = True


@dataclass
class RunSummary:
    run_id: str
    seconds: float
    stats: Counter  # (source, lang, outcome) -> n

    def totals(self) -> Counter:
        out: Counter = Counter()
        for (_, _, outcome), n in self.stats.items():
            out[outcome] += n
        return out


# -- worker side -------------------------------------------------------------------------------------
_LID: LanguageIdentifier | None = None


def _lid(cfg: MineConfig) -> LanguageIdentifier:
    global _LID  # one model per worker process, loaded on first use
    if _LID is None:
        _LID = LanguageIdentifier(
            min_chars=cfg.lid_min_chars,
            min_conf=cfg.lid_min_conf,
            max_declared_conf=cfg.lid_max_declared_conf,
        )
    return _LID


def _check_lang(
    rec: Pair | Document, text: str, declared: str, what: str, cfg: MineConfig
) -> tuple[str, float, str | None]:
    """(lang, confidence for it, rejection detail or None). Undeclared ('und') takes the detected one."""
    lid = _lid(cfg)
    if declared == "und":
        det = lid.detect(text, "und")
        return det.lang, det.conf, None
    det = lid.detect(text, declared)
    if lid.contradicts(text, declared, det):
        return (
            declared,
            det.declared_conf,
            f"{what}: declared {declared}, detected {det.lang} (p={det.conf:.2f})",
        )
    return declared, det.declared_conf, None


def process_record(rec: Record, cfg: MineConfig) -> Record:
    """Clean, filter and language-identify one record; a failure comes back as `Rejected`."""
    lim = cfg.limits
    if isinstance(rec, Rejected):
        return rec
    if isinstance(rec, Pair):
        rec.query = normalize_text(rec.query)
        rec.positive = normalize_text(rec.positive, keep_newlines=True)
        for what, text, max_chars in (
            ("query", rec.query, lim.max_query_chars),
            ("positive", rec.positive, lim.max_passage_chars),
        ):
            reason = check_text(text, max_chars=max_chars, min_letters=lim.min_letters)
            if reason:
                return Rejected(rec.source, rec.location, reason, what, rec.lang, text[:500])
        rec.lang, rec.lang_conf, bad = _check_lang(rec, rec.positive, rec.lang, "positive", cfg)
        if bad is None:
            rec.query_lang, rec.query_lang_conf, bad = _check_lang(
                rec, rec.query, rec.query_lang, "query", cfg
            )
        if bad:
            return Rejected(
                rec.source,
                rec.location,
                "wrong-language",
                bad,
                rec.lang,
                f"{rec.query[:200]} → {rec.positive[:300]}",
            )
        rec.near_key = near_key(rec.kind, rec.query, rec.positive)
        if not rec.group_key:
            rec.group_key = rec.query
        return rec
    rec.title = normalize_text(rec.title)
    rec.text = normalize_text(rec.text, keep_newlines=True)
    if not rec.text:
        return Rejected(rec.source, rec.location, "empty", "text", rec.lang)
    if len(rec.text) < lim.min_document_chars:
        return Rejected(
            rec.source, rec.location, "too-short", f"{len(rec.text)} chars", rec.lang, rec.text[:500]
        )
    if len(rec.text) > lim.max_document_chars:
        return Rejected(
            rec.source, rec.location, "too-long", f"{len(rec.text)} chars", rec.lang, rec.text[:500]
        )
    det = _lid(cfg).detect(rec.text, rec.lang)
    rec.detected_lang = det.lang
    rec.lang, rec.lang_conf, bad = _check_lang(rec, rec.text, rec.lang, "text", cfg)
    if bad:
        return Rejected(rec.source, rec.location, "wrong-language", bad, rec.lang, rec.text[:500])
    rec.signature = minhash_signature(rec.text)
    return rec


def process_unit(source: Source, cfg: MineConfig, unit: Any) -> list[Record]:
    """Read one unit of `source` and process every record (runs in a worker process)."""
    try:
        return [process_record(r, cfg) for r in source.read(unit)]
    except Exception as err:  # a broken unit is quarantined whole; the run goes on
        log.warning(
            "source %s: unit %s failed: %s", source.name, unit, err, exc_info=log.isEnabledFor(logging.DEBUG)
        )
        return [Rejected(source.name, str(unit)[:1000], "unit-failed", f"{type(err).__name__}: {err}")]


# -- parent side -------------------------------------------------------------------------------------
class _Writer:
    """Batches records and writes them with SQL dedup; counts outcomes per (source, lang)."""

    def __init__(self, wh: Warehouse, run_id: str, cfg: MineConfig) -> None:
        self.wh, self.run_id, self.cfg = wh, run_id, cfg
        self.stats: Counter = Counter()
        self.pairs: list[Pair] = []
        self.docs: list[Document] = []
        self.rejected: list[Rejected] = []
        self.new_per_lang: Counter = Counter()
        self.doc_alias: dict[str, str] = {}  # near-duplicate doc id -> kept doc id
        self.near = NearDuplicateIndex(cfg.near_dup_threshold)
        rows = wh.con.execute(
            "SELECT lang, doc_id, minhash FROM documents WHERE minhash IS NOT NULL"
        ).fetchall()
        for lang, doc_id, sig in rows:
            self.near.add(lang, doc_id, bytes(sig))

    def add(self, rec: Record) -> None:
        if isinstance(rec, Pair):
            self.pairs.append(rec)
        elif isinstance(rec, Document):
            self.docs.append(rec)
        else:
            self.rejected.append(rec)
        if len(self.pairs) + len(self.docs) + len(self.rejected) >= self.cfg.batch_size:
            self.flush()

    def flush(self) -> None:
        self._flush_docs()
        self._flush_pairs()
        self._flush_rejected()

    def _classify(
        self, table: str, id_col: str, ids: list[str], sources: list[str], locs: list[str]
    ) -> list[tuple[str, str]]:
        """Per row: ('new'|'unchanged'|'duplicate'|'near-duplicate', id of the kept record)."""
        b = pa.table({"seq": list(range(len(ids))), "id": ids, "source": sources, "location": locs})
        self.wh.con.register("_b", b)
        try:
            rows = self.wh.con.execute(
                f"""
                WITH b2 AS (SELECT *, row_number() OVER (PARTITION BY id ORDER BY seq) AS rn,
                                   first_value(seq) OVER (PARTITION BY id ORDER BY seq) AS first_seq FROM _b)
                SELECT b2.seq,
                       CASE WHEN t.{id_col} IS NOT NULL AND t.source = b2.source AND t.location = b2.location THEN 'unchanged'
                            WHEN t.{id_col} IS NOT NULL THEN 'duplicate'
                            WHEN rn > 1 THEN 'duplicate'
                            ELSE 'new' END,
                       coalesce(t.{id_col}, b2.id), t.location
                FROM b2 LEFT JOIN {table} t ON t.{id_col} = b2.id ORDER BY b2.seq
                """
            ).fetchall()
        finally:
            self.wh.con.unregister("_b")
        return [(outcome, kept if loc is None else f"{kept} @ {loc}") for _, outcome, kept, loc in rows]

    def _flush_docs(self) -> None:
        if not self.docs:
            return
        docs, self.docs = self.docs, []
        ids = [d.doc_id for d in docs]
        outcomes = self._classify(
            "documents", "doc_id", ids, [d.source for d in docs], [d.location for d in docs]
        )
        keep: list[Document] = []
        for d, doc_id, (outcome, kept) in zip(docs, ids, outcomes, strict=True):
            if outcome == "new" and d.signature is not None:
                other = self.near.find(d.lang, d.signature)
                if other is not None:
                    outcome, kept = "near-duplicate", other
                    self.doc_alias[doc_id] = other
                else:
                    self.near.add(d.lang, doc_id, d.signature)
            if outcome == "new":
                keep.append(d)
                self.stats[(d.source, d.lang, "document")] += 1
            elif outcome == "unchanged":
                self.stats[(d.source, d.lang, "unchanged")] += 1
            else:
                self.rejected.append(Rejected(d.source, d.location, outcome, f"of {kept}", d.lang, d.title))
        if keep:
            now = time.time()
            self.wh.con.register(
                "_d",
                pa.table(
                    {
                        "doc_id": [d.doc_id for d in keep],
                        "source": [d.source for d in keep],
                        "location": [d.location for d in keep],
                        "lang": [d.lang for d in keep],
                        "lang_conf": [d.lang_conf for d in keep],
                        "detected_lang": [d.detected_lang for d in keep],
                        "title": [d.title for d in keep],
                        "text": [d.text for d in keep],
                        "n_chars": pa.array([len(d.text) for d in keep], pa.int32()),
                        "group_key": [d.group_key for d in keep],
                        "meta": [json.dumps(d.meta, ensure_ascii=False) for d in keep],
                        "minhash": pa.array([d.signature for d in keep], pa.binary()),
                    }
                ),
            )
            self.wh.con.execute(
                "INSERT INTO documents BY NAME SELECT *, ? AS run_id, to_timestamp(?)::TIMESTAMP AS created_at FROM _d",
                [self.run_id, now],
            )
            self.wh.con.unregister("_d")

    def _flush_pairs(self) -> None:
        if not self.pairs:
            return
        pairs, self.pairs = self.pairs, []
        ids = [p.pair_id for p in pairs]
        outcomes = self._classify(
            "pairs", "pair_id", ids, [p.source for p in pairs], [p.location for p in pairs]
        )
        # Near duplicates: the same near key as a stored pair or an earlier new pair of this batch.
        cand = [
            (i, p.near_key) for i, (p, (o, _)) in enumerate(zip(pairs, outcomes, strict=True)) if o == "new"
        ]
        if cand:
            self.wh.con.register(
                "_n", pa.table({"i": [i for i, _ in cand], "near_key": [k for _, k in cand]})
            )
            stored = dict(
                self.wh.con.execute(
                    "SELECT _n.i, any_value(p.pair_id) FROM _n JOIN pairs p USING (near_key) GROUP BY _n.i"
                ).fetchall()
            )
            self.wh.con.unregister("_n")
            first: dict[str, int] = {}
            for i, key in cand:
                if i in stored:
                    outcomes[i] = ("near-duplicate", stored[i])
                elif key in first:
                    outcomes[i] = ("near-duplicate", ids[first[key]])
                else:
                    first[key] = i
        keep: list[tuple[str, Pair]] = []
        for p, pid, (outcome, kept) in zip(pairs, ids, outcomes, strict=True):
            if outcome == "new":
                cap = self.cfg.max_per_language
                # Per language *pair*: cross-lingual X→en pairs must not use up English's own budget.
                lang_pair = (p.source, p.query_lang, p.lang)
                if cap is not None and self.new_per_lang[lang_pair] >= cap:
                    self.stats[(p.source, p.lang, "skipped:over-limit")] += 1
                    continue
                self.new_per_lang[lang_pair] += 1
                keep.append((pid, p))
                self.stats[(p.source, p.lang, "pair")] += 1
            elif outcome == "unchanged":
                self.stats[(p.source, p.lang, "unchanged")] += 1
            else:
                self.rejected.append(
                    Rejected(
                        p.source,
                        p.location,
                        outcome,
                        f"of {kept}",
                        p.lang,
                        f"{p.query[:200]} → {p.positive[:300]}",
                    )
                )
        if keep:
            self.wh.con.register(
                "_p",
                pa.table(
                    {
                        "pair_id": [pid for pid, _ in keep],
                        "kind": [p.kind for _, p in keep],
                        "query": [p.query for _, p in keep],
                        "positive": [p.positive for _, p in keep],
                        "lang": [p.lang for _, p in keep],
                        "query_lang": [p.query_lang for _, p in keep],
                        "lang_conf": pa.array([p.lang_conf for _, p in keep], pa.float64()),
                        "query_lang_conf": pa.array([p.query_lang_conf for _, p in keep], pa.float64()),
                        "source": [p.source for _, p in keep],
                        "location": [p.location for _, p in keep],
                        "doc_id": [
                            self.doc_alias.get(p.doc_id, p.doc_id) if p.doc_id else None for _, p in keep
                        ],
                        "group_key": [p.group_key for _, p in keep],
                        "near_key": [p.near_key for _, p in keep],
                    }
                ),
            )
            self.wh.con.execute(
                "INSERT INTO pairs BY NAME SELECT *, ? AS run_id, to_timestamp(?)::TIMESTAMP AS created_at FROM _p",
                [self.run_id, time.time()],
            )
            self.wh.con.unregister("_p")

    def _flush_rejected(self) -> None:
        if not self.rejected:
            return
        rej, self.rejected = self.rejected, []
        # One row per quarantine id (a record can be rejected twice in a run only by re-reading it).
        by_id = {r.quarantine_id: r for r in rej}
        self.wh.con.register(
            "_q",
            pa.table(
                {
                    "quarantine_id": list(by_id),
                    "source": [r.source for r in by_id.values()],
                    "location": [r.location for r in by_id.values()],
                    "reason": [r.reason for r in by_id.values()],
                    "detail": [r.detail for r in by_id.values()],
                    "lang": [r.lang for r in by_id.values()],
                    "content": [r.content for r in by_id.values()],
                }
            ),
        )
        known = {
            row[0]
            for row in self.wh.con.execute(
                "SELECT quarantine_id FROM _q SEMI JOIN quarantine USING (quarantine_id)"
            ).fetchall()
        }
        self.wh.con.execute(
            "INSERT INTO quarantine BY NAME SELECT *, ? AS run_id, to_timestamp(?)::TIMESTAMP AS created_at "
            "FROM _q ANTI JOIN quarantine USING (quarantine_id)",
            [self.run_id, time.time()],
        )
        self.wh.con.unregister("_q")
        for r in rej:
            outcome = "unchanged" if r.quarantine_id in known else f"quarantine:{r.reason}"
            self.stats[(r.source, r.lang or "und", outcome)] += 1


def map_units(fn: Callable[[Any], T], units: Sequence[Any], workers: int) -> Iterator[T]:
    """`fn(unit)` for every unit, in order; over `workers` processes when there is more than one unit."""
    if workers > 1 and len(units) > 1:
        import multiprocessing as mp

        # forkserver, not fork: a forked child of a multi-threaded process (a Prefect flow run has ~18 threads)
        # inherits locks another thread held and the parent's signal handlers (Prefect's SIGTERM handler
        # raised inside a worker's exit), and the pool's shutdown then waited on a dead lock forever. Workers
        # forked from the clean fork server start with neither; each loads the language-ID model once.
        with mp.get_context("forkserver").Pool(workers) as pool:
            yield from pool.imap(fn, units, chunksize=1)
    else:
        yield from map(fn, units)


def _records(sources: Sequence[Source], cfg: MineConfig) -> Iterator[Record]:
    """Every processed record of every source, in order; units spread over `cfg.workers` processes."""
    from tqdm.auto import tqdm

    show = cfg.progress and log.isEnabledFor(logging.INFO)
    for source in sources:
        units = list(source.units())
        log.info("source %s: %d units", source.name, len(units))
        bar = tqdm(total=len(units), desc=f"mine {source.name}", unit="unit", disable=not show)
        for recs in map_units(partial(process_unit, source, cfg), units, cfg.workers):
            bar.update()
            yield from recs
        bar.close()


def derive_crosslingual_pairs(wh: Warehouse, source: str = "manpages") -> Iterator[Pair]:
    """Translated page summary (language X) → English description of the same page, for every page
    with both. Query→passage-shaped cross-lingual data; also the basis of cross-lingual eval sets."""
    rows = wh.con.execute(
        """
        SELECT x.query, e.positive, x.lang, x.location, e.location, x.group_key, e.doc_id, e.lang_conf, x.query_lang_conf
        FROM pairs x JOIN pairs e ON e.group_key = x.group_key
        WHERE x.source = ? AND e.source = ? AND x.kind = 'title-body' AND e.kind = 'title-body'
          AND x.lang = x.query_lang AND x.lang <> 'en' AND e.lang = 'en' AND e.query_lang = 'en'
        ORDER BY x.group_key, x.lang
        """,
        [source, source],
    ).fetchall()
    for query, positive, qlang, xloc, eloc, group, doc_id, conf, qconf in rows:
        p = Pair(
            "title-body",
            query,
            positive,
            "en",
            qlang,
            source,
            f"{xloc} -> {eloc}",
            group,
            doc_id,
            conf,
            qconf,
        )
        p.near_key = near_key(p.kind, p.query, p.positive)
        yield p


def mine_config(spec: SourcesSpec, *, workers: int = 2, progress: bool = True) -> MineConfig:
    """The run configuration `spec` implies (its per-language cap applies to the run too)."""
    return MineConfig(workers=workers, max_per_language=spec.max_per_language, progress=progress)


def mine_sources(spec: SourcesSpec, wh: Warehouse, *, workers: int = 2, progress: bool = True) -> RunSummary:
    """Mine what `spec` names into `wh` (`m3 mine` and the `mine_pairs` flow): its sources, with its
    per-language cap applied to the run too."""
    return mine(spec.build(), wh, mine_config(spec, workers=workers, progress=progress))


def mine(sources: Sequence[Source], wh: Warehouse, cfg: MineConfig | None = None) -> RunSummary:
    """Ingest `sources` into `wh`; returns the run's counts per (source, language, outcome)."""
    cfg = cfg or MineConfig()
    return ingest_records(sources, wh, cfg, _records(sources, cfg))


def ingest_records(
    sources: Sequence[Source],
    wh: Warehouse,
    cfg: MineConfig,
    records: Iterable[Record],
    extra_params: dict | None = None,
) -> RunSummary:
    """One mining run over `records` (the processed records of `sources`, in unit order): exact and near
    dedup against the warehouse, quarantine, cross-lingual pairs, run stats. `mine` feeds it records
    processed now; `m3core.data.shards.ingest_shards` the same records read back from Parquet shards."""
    # This process holds the warehouse's write lock, so a run still marked 'running' was killed: say so.
    stale = wh.con.execute(
        "UPDATE ingest_runs SET status = 'killed', finished_at = now(), "
        "error = 'the process ended before the run finished (found by a later run)' "
        "WHERE status = 'running' RETURNING run_id"
    ).fetchall()
    for (old_id,) in stale:
        log.warning("mining run %s never finished (killed?): marked 'killed'", old_id)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    names = ",".join(s.name for s in sources)
    run_params = {"config": asdict(cfg), "sources": [repr(s) for s in sources], **(extra_params or {})}
    params = json.dumps(run_params, default=str)
    wh.con.execute(
        "INSERT INTO ingest_runs (run_id, source, params, status, started_at) VALUES (?, ?, ?, 'running', now())",
        [run_id, names, params],
    )
    t0 = time.perf_counter()
    writer = _Writer(wh, run_id, cfg)
    n_read = 0
    try:
        for rec in records:
            n_read += 1
            writer.add(rec)
        writer.flush()
        if cfg.derive_crosslingual:
            for src in {s.name for s in sources if type(s).__name__ == "ManPageSource"}:
                for pair in derive_crosslingual_pairs(wh, src):
                    writer.add(pair)
                writer.flush()
    except BaseException as err:
        wh.con.execute(
            "UPDATE ingest_runs SET status = 'failed', finished_at = now(), error = ? WHERE run_id = ?",
            [f"{type(err).__name__}: {err}", run_id],
        )
        raise
    seconds = time.perf_counter() - t0
    summary = RunSummary(run_id, seconds, writer.stats)
    if writer.stats:
        wh.con.executemany(  # a few hundred rows at most: executemany is fine here
            "INSERT INTO run_stats VALUES (?, ?, ?, ?, ?)",
            [[run_id, s, lang, outcome, n] for (s, lang, outcome), n in sorted(writer.stats.items())],
        )
    tot = summary.totals()
    n_q = sum(n for k, n in tot.items() if k.startswith("quarantine:"))
    wh.con.execute(
        "UPDATE ingest_runs SET status = 'ok', finished_at = now(), n_read = ?, n_pairs = ?, n_documents = ?, "
        "n_quarantined = ?, n_unchanged = ?, seconds = ? WHERE run_id = ?",
        [n_read, tot["pair"], tot["document"], n_q, tot["unchanged"], seconds, run_id],
    )
    log.info("run %s: %d records in %.1f s: %s", run_id, n_read, seconds, dict(tot))
    return summary
