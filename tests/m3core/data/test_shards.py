"""Mining through Parquet shards (`m3core.data.shards`) against the single-process path, through real DuckDB files:
the same rows, counts by outcome and quarantine; reruns skip unchanged units; a changed unit is processed again.

The inputs are small but real and touch every dedup path: gettext catalogs compiled to .mo (two with the same
messages: cross-shard exact duplicates), JSONL with within-unit exact and near duplicates and documents that
near-duplicate each other across files (MinHash), man pages in 2-page units (cross-lingual pairs), an
unreadable catalog and a corrupt Parquet file (a unit that fails whole).
"""

from __future__ import annotations

import json
from collections import Counter

import duckdb
import polib
import pytest

from m3core.data.pipeline import MineConfig, mine
from m3core.data.shards import ingest_shards, unit_fingerprint, write_shards, write_unit_shard
from m3core.data.sources.files import FieldMap, JsonlSource, ParquetSource, RowMapper
from m3core.data.sources.gettext import GettextSource
from m3core.data.sources.hf import HFDatasetSource
from m3core.data.sources.manpages import ManPageSource
from m3core.data.warehouse import Warehouse
from tests.support.data_fixtures import PO_TEMPLATE, write_man_tree

CFG = MineConfig(workers=1, progress=False)
_SERVICES = ["Webserver", "Datenbank", "Mailserver", "Zeitdienst", "Druckdienst", "Namensdienst", "Firewall"]
MANUAL = " ".join(
    f"Im Schritt {i} wird der {s} eingerichtet und danach gründlich geprüft."
    for i, s in enumerate(_SERVICES * 3)
)
COPY = (
    "Wie kopiere ich Dateien in ein anderes Verzeichnis?",
    "Mit dem Befehl cp kopieren Sie Dateien in ein anderes Verzeichnis.",
)


def _jsonl(path, rows, tail=""):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


def make_sources(root):
    """The sources over inputs written under `root`, in the pipeline's order."""
    po = polib.pofile(PO_TEMPLATE.format(lang="de"))
    for domain in ("app", "copy"):  # the same messages twice: the second catalog's pairs are duplicates
        mo = root / "locale" / "de" / "LC_MESSAGES" / f"{domain}.mo"
        mo.parent.mkdir(parents=True, exist_ok=True)
        po.save_as_mofile(str(mo))
    (root / "locale" / "de" / "LC_MESSAGES" / "broken.mo").write_bytes(b"not a catalog")
    q, p = COPY
    qa = _jsonl(
        root / "qa.jsonl",
        [
            {"q": q, "p": p},
            {"q": q, "p": p},  # within the unit: exact duplicate
            {"q": q.lower().rstrip("?"), "p": p.rstrip(".") + "!"},  # near duplicate
            {"q": "Wie zeige ich den freien Speicherplatz an?", "p": ""},
            {
                "q": "Wie lösche ich eine Datei?",
                "p": "You remove a file with the rm command, which deletes it from the directory for good.",
            },
            {"title": "Handbuch", "text": "Handbuch\n\n" + MANUAL},
        ],
        tail="{broken\n",
    )
    qa2 = _jsonl(
        root / "qa2.jsonl",
        [
            {"q": q, "p": p},  # across units: exact duplicate of qa.jsonl's first row
            {"q": "Wie benenne ich eine Datei um?", "p": "Mit dem Befehl mv benennen Sie eine Datei um."},
            {"title": "Handbuch", "text": "Handbuch\n\n" + MANUAL + " Version 2."},  # near duplicate document
        ],
    )
    (root / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    mapper = RowMapper("qa", FieldMap(query="q", positive="p"), lang="de")
    return [
        GettextSource((str(root / "locale" / "*" / "LC_MESSAGES" / "*.mo"),)),
        JsonlSource([qa, qa2], mapper),
        ParquetSource([root / "corrupt.parquet"], RowMapper("pq", lang="de")),
        ManPageSource(write_man_tree(root / "man"), chunk=2),
    ]


def warehouse_rows(path) -> dict[str, list]:
    """What a mining run leaves in a warehouse file, without run ids and timestamps."""
    with Warehouse(path, read_only=True) as wh:
        q = wh.con.execute
        return {
            "pairs": q("SELECT * EXCLUDE (run_id, created_at) FROM pairs ORDER BY pair_id").fetchall(),
            "documents": q("SELECT * EXCLUDE (run_id, created_at) FROM documents ORDER BY doc_id").fetchall(),
            "quarantine": q(
                "SELECT * EXCLUDE (run_id, created_at) FROM quarantine ORDER BY quarantine_id"
            ).fetchall(),
            "run_stats": q(
                "SELECT r.started_at, s.* EXCLUDE (run_id) FROM run_stats s JOIN ingest_runs r USING (run_id) "
                "ORDER BY ALL"
            ).fetchall(),
            "runs": q(
                "SELECT status, source, n_read, n_pairs, n_documents, n_quarantined, n_unchanged "
                "FROM ingest_runs ORDER BY started_at"
            ).fetchall(),
        }


def same_run(a: dict, b: dict) -> None:
    for table in ("pairs", "documents", "quarantine", "runs"):
        assert a[table] == b[table], table
    # Runs in order (their start times differ between the two warehouses, their stats must not).
    assert [r[1:] for r in a["run_stats"]] != [] and Counter(r[1:] for r in a["run_stats"]) == Counter(
        r[1:] for r in b["run_stats"]
    )


def single_process(sources, path, cfg=CFG):
    with Warehouse(path) as wh:
        return mine(sources, wh, cfg)


def sharded(sources, path, shard_root, cfg=CFG):
    shards = write_shards(sources, cfg, shard_root)
    with Warehouse(path) as wh:
        return ingest_shards(sources, shards, wh, cfg), shards


def test_shards_on_a_2_worker_dask_cluster_give_the_single_process_warehouse(tmp_path):
    distributed = pytest.importorskip("distributed")
    sources = make_sources(tmp_path / "in")
    reference = single_process(sources, tmp_path / "single.duckdb")
    work = [(s, u) for s in sources for u in s.units()]
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as c,
        distributed.Client(c) as client,
    ):
        client.wait_for_workers(2)
        futures = client.map(
            write_unit_shard, [s for s, _ in work], [u for _, u in work], cfg=CFG,
            shard_root=str(tmp_path / "shards"), pure=False,
        )  # fmt: skip
        shards = client.gather(futures)
        workers = {w for f in futures for w in client.who_has(f)[f.key]}
    assert len(workers) == 2  # both worker processes made shards
    with Warehouse(tmp_path / "sharded.duckdb") as wh:
        summary = ingest_shards(sources, shards, wh, CFG)
    single, shard = warehouse_rows(tmp_path / "single.duckdb"), warehouse_rows(tmp_path / "sharded.duckdb")
    same_run(single, shard)
    assert summary.totals() == reference.totals()
    # The inputs exercised what they are there for (cross-shard exact and near dedup, failed units, ...).
    reasons = Counter(row[3] for row in shard["quarantine"])
    assert {"duplicate", "near-duplicate", "unit-failed", "unreadable-catalog", "wrong-language"} <= set(
        reasons
    )
    assert len(shard["documents"]) == 12 + 1 and sum(s.counts["unit_duplicates"] for s in shards) == 1
    assert not any(s.skipped for s in shards) and len(shards) == len(work)


def test_a_rerun_skips_every_unchanged_unit_and_adds_nothing(tmp_path):
    sources = make_sources(tmp_path / "in")
    single_process(sources, tmp_path / "single.duckdb")
    _, first = sharded(sources, tmp_path / "sharded.duckdb", tmp_path / "shards")
    rerun_single = single_process(sources, tmp_path / "single.duckdb")
    rerun, again = sharded(sources, tmp_path / "sharded.duckdb", tmp_path / "shards")
    # Every unit skipped but the one that failed whole (a failure is retried, as the single path reads it again).
    failed = {s.fingerprint for s in first if s.source == "pq"}
    assert {s.fingerprint for s in again if not s.skipped} == failed and len(again) == len(first) == 12
    assert [s.fingerprint for s in again] == [s.fingerprint for s in first]
    assert set(rerun.totals()) == {"unchanged"} and rerun.totals() == rerun_single.totals()
    same_run(warehouse_rows(tmp_path / "single.duckdb"), warehouse_rows(tmp_path / "sharded.duckdb"))


def test_a_changed_unit_is_processed_again_the_others_skipped(tmp_path):
    sources = make_sources(tmp_path / "in")
    single_process(sources, tmp_path / "single.duckdb")
    _, first = sharded(sources, tmp_path / "sharded.duckdb", tmp_path / "shards")
    with open(tmp_path / "in" / "qa2.jsonl", "a", encoding="utf-8") as fh:  # one new row in one unit
        fh.write(
            json.dumps({"q": "Wie finde ich eine Datei?", "p": "Mit find suchen Sie eine Datei im Baum."})
            + "\n"
        )
    # A crash between a shard's Parquet files and its manifest: the unit counts as not done.
    man_shard = next(s for s in first if s.source == "manpages")
    (tmp_path / "shards" / "manifests" / f"{man_shard.fingerprint}.json").unlink()
    changed = single_process(sources, tmp_path / "single.duckdb")
    summary, again = sharded(sources, tmp_path / "sharded.duckdb", tmp_path / "shards")
    made = {s.unit for s in again if not s.skipped}
    assert made == {
        str(tmp_path / "in" / "qa2.jsonl"),
        str(tmp_path / "in" / "corrupt.parquet"),
        man_shard.unit,
    }
    assert summary.totals() == changed.totals() and summary.totals()["pair"] == 1
    same_run(warehouse_rows(tmp_path / "single.duckdb"), warehouse_rows(tmp_path / "sharded.duckdb"))


def test_the_fingerprint_follows_what_changes_the_records(tmp_path):
    f = _jsonl(tmp_path / "a.jsonl", [{"query": "a question here", "positive": "an answer there"}])
    g = _jsonl(tmp_path / "b.jsonl", [{"query": "another question", "positive": "another answer"}])
    src = JsonlSource([f], RowMapper("qa", lang="en"))
    base = unit_fingerprint(src, f, CFG)
    # Writer-only settings and the other files of the source do not change how this unit is read...
    assert unit_fingerprint(src, f, MineConfig(workers=4, max_per_language=3, near_dup_threshold=0.5)) == base
    assert unit_fingerprint(JsonlSource([f, g], RowMapper("qa", lang="en")), f, CFG) == base
    # ...its bytes, the processing settings and the way rows are mapped do.
    assert unit_fingerprint(src, f, MineConfig(lid_min_conf=0.9)) != base
    assert unit_fingerprint(JsonlSource([f], RowMapper("qa", lang="de")), f, CFG) != base
    f.write_text(f.read_text().replace("answer", "Answer"))
    assert unit_fingerprint(src, f, CFG) != base
    # An HF source's units are row ranges: its data files (size, mtime) are part of every unit's name.
    hf = HFDatasetSource("json", RowMapper("hf", lang="en"), data_files=[str(g)])
    before = unit_fingerprint(hf, (0, 1), CFG)
    assert unit_fingerprint(HFDatasetSource("json", RowMapper("hf", lang="en"), data_files=[str(g)], shard_rows=7),
                            (0, 1), CFG) == before  # fmt: skip
    g.write_text(
        g.read_text() + json.dumps({"query": "one more question", "positive": "one more answer"}) + "\n"
    )
    assert unit_fingerprint(hf, (0, 1), CFG) != before


def test_shards_are_tables_for_sql_partitioned_by_language(tmp_path):
    sources = make_sources(tmp_path / "in")
    shards = write_shards(sources, CFG, tmp_path / "shards")
    root = tmp_path / "shards"
    con = duckdb.connect()
    by_lang = dict(
        con.execute(
            f"SELECT lang, count(*) FROM read_parquet('{root}/pairs/*/*.parquet', hive_partitioning = true) "
            "GROUP BY lang"
        ).fetchall()
    )
    assert by_lang == {"de": sum(s.counts["pairs"] for s in shards) - 6, "en": 6}  # 6 English man pages
    assert all(
        f.split("/")[1] == "lang=de" for s in shards if s.source == "qa" for f in s.files if "pairs" in f
    )
    # The within-unit duplicate keeps its own row (location) and points at the first copy's texts.
    dup = con.execute(
        f"WITH p AS (SELECT * FROM read_parquet('{root}/pairs/*/*.parquet', filename = true)) "
        "SELECT d.location, d.query, f.query FROM p d JOIN p f ON f.filename = d.filename AND f.seq = d.dup_of"
    ).fetchall()
    assert len(dup) == 1 and dup[0][0].endswith("qa.jsonl:2") and dup[0][1] is None and dup[0][2] == COPY[0]
    # Cross-shard exact duplicates, in SQL over the shards: the second catalog's pairs are the first's.
    across = con.execute(
        f"SELECT count(*) FROM (SELECT pair_id FROM read_parquet('{root}/pairs/*/*.parquet', filename = true) "
        "WHERE dup_of IS NULL GROUP BY pair_id HAVING count(DISTINCT filename) > 1)"
    ).fetchone()[0]
    catalog_pairs = next(s for s in shards if s.unit.endswith("app.mo")).counts["pairs"]
    assert across == catalog_pairs + 1  # and the copy question of qa.jsonl / qa2.jsonl


def test_a_shard_root_url_works_through_fsspec(tmp_path):
    import fsspec

    sources = make_sources(tmp_path / "in")
    url = f"memory://m3-test-shards/{tmp_path.name}"
    try:
        _, shards = sharded(sources, tmp_path / "url.duckdb", url)
        assert all(s.root == url.replace("memory://", "memory:///") for s in shards)
        _, local = sharded(sources, tmp_path / "local.duckdb", tmp_path / "shards")
        assert [s.fingerprint for s in shards] == [s.fingerprint for s in local]
        same_run(warehouse_rows(tmp_path / "url.duckdb"), warehouse_rows(tmp_path / "local.duckdb"))
    finally:
        fsspec.filesystem("memory").rm(f"/m3-test-shards/{tmp_path.name}", recursive=True)


def test_shards_out_of_source_order_are_refused(tmp_path):
    sources = make_sources(tmp_path / "in")
    shards = write_shards(sources[:2], CFG, tmp_path / "shards")
    with Warehouse(tmp_path / "w.duckdb") as wh:
        with pytest.raises(ValueError, match="order of their sources"):
            ingest_shards(sources, shards[::-1], wh, CFG)
        with pytest.raises(ValueError, match=r"sources \['qa'\]"):
            ingest_shards(sources[:1], shards, wh, CFG)


def test_m3_mine_shard_root_with_worker_processes(tmp_path, capsys):
    from m3core.cli import main

    inputs = make_sources(tmp_path / "in")[1].paths  # the two JSONL files
    common = [
        "mine",
        "--no-progress",
        "--lang",
        "de",
        "--map",
        "query=q,positive=p",
        "--name",
        "qa",
        "--jsonl",
    ]
    common += [str(p) for p in inputs]
    assert main([*common, "--warehouse", str(tmp_path / "single.duckdb")]) == 0
    sharded = [*common, "--warehouse", str(tmp_path / "sharded.duckdb"), "--shard-root", str(tmp_path / "s")]
    assert main([*sharded, "--workers", "2"]) == 0
    assert "2 units, 2 made, 0 unchanged (skipped)" in capsys.readouterr().out
    same_run(warehouse_rows(tmp_path / "single.duckdb"), warehouse_rows(tmp_path / "sharded.duckdb"))
    assert main(sharded) == 0
    assert "2 units, 0 made, 2 unchanged (skipped)" in capsys.readouterr().out
