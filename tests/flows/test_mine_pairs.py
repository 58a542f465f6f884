"""The `mine_pairs` flow twice in a row in one process, with worker processes, inside real Prefect flow runs.

A forked pool worker of the (multi-threaded) flow process once inherited a held lock and Prefect's SIGTERM
handler, and the pool's shutdown then hung forever on a second run; the workers now come from a fork server.
The sharded path (each unit a mapped task on a local 2-worker Dask cluster, then one ingest) leaves the same
warehouse as the single-process path, and its rerun skips every unit.
"""

from __future__ import annotations

import json

import pytest

from tests.support.data_fixtures import write_man_tree
from tests.support.procs import platform_home


@pytest.fixture(scope="module")
def harness(tmp_path_factory, prefect_server):
    with platform_home(tmp_path_factory.mktemp("m3home-mine")) as home:
        yield home


def counts(path):
    from m3core.data.warehouse import Warehouse

    with Warehouse(path, read_only=True) as wh:
        return {t: wh.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("pairs", "documents")}


def warehouse_rows(path) -> dict[str, list]:
    """A warehouse's rows without run ids and timestamps, and its runs' counts in order."""
    from m3core.data.warehouse import Warehouse

    with Warehouse(path, read_only=True) as wh:
        q = wh.con.execute
        rows = {
            t: q(f"SELECT * EXCLUDE (run_id, created_at) FROM {t} ORDER BY ALL").fetchall()
            for t in ("pairs", "documents", "quarantine")
        }
        rows["runs"] = q(
            "SELECT status, n_read, n_pairs, n_documents, n_quarantined, n_unchanged FROM ingest_runs "
            "ORDER BY started_at"
        ).fetchall()
        rows["run_stats"] = q(
            "SELECT s.source, lang, outcome, n, rank() OVER (ORDER BY r.started_at) FROM run_stats s "
            "JOIN ingest_runs r USING (run_id) ORDER BY ALL"
        ).fetchall()
    return rows


# First in the module: Prefect binds its console handler to the stderr of the test that first runs a flow, and the
# test below captures stderr itself (capfd), whose stream is closed after it.
@pytest.mark.timeout(600)
def test_sharded_flow_on_a_local_2_worker_dask_cluster_gives_the_single_process_warehouse(harness, tmp_path):
    from flows.mine_pairs import mine_pairs
    from flows.params import MineParams

    man = write_man_tree(tmp_path / "man")
    qa = tmp_path / "qa.jsonl"
    rows = [
        {
            "query": "Wie lösche ich eine Datei endgültig?",
            "positive": "Mit rm löschen Sie eine Datei endgültig.",
        },
        {
            "query": "Wie lösche ich eine Datei endgültig?",
            "positive": "Mit rm löschen Sie eine Datei endgültig.",
        },
        {"query": "How do I list hidden files?", "positive": "Run ls -a to list hidden files as well."},
    ]
    qa.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "{broken\n", encoding="utf-8"
    )
    base = {
        "gettext": False,
        "manpage_root": str(man),
        "manpage_languages": [],
        "jsonl": [str(qa)],
        "workers": 2,
    }
    single, sharded = str(tmp_path / "single.duckdb"), str(tmp_path / "sharded.duckdb")
    shard_params = MineParams(**base, shards=True, shard_root=str(tmp_path / "shards"), dask_workers=2)

    first = mine_pairs(MineParams(**base), single)
    first_sharded = mine_pairs(shard_params, sharded)
    assert first_sharded["totals"] == first["totals"] and first_sharded["shards"]["skipped"] == 0
    assert first_sharded["counts"] == first["counts"]
    units = first_sharded["shards"]["units"]
    assert units == 2  # the JSONL file and one chunk of man pages
    again = mine_pairs(MineParams(**base), single)
    again_sharded = mine_pairs(shard_params, sharded)
    assert again_sharded["shards"]["skipped"] == units and set(again_sharded["totals"]) == {"unchanged"}
    assert again_sharded["totals"] == again["totals"]
    assert warehouse_rows(single) == warehouse_rows(sharded)


@pytest.mark.timeout(600)
def test_mining_twice_with_workers_finishes_and_adds_only_new_rows(harness, tmp_path, capfd):
    from flows.mine_pairs import mine_pairs
    from flows.params import MineParams

    man = write_man_tree(tmp_path / "man")
    extra = tmp_path / "extra.jsonl"
    rows = [
        {
            "query": "Wie lösche ich eine Datei endgültig?",
            "positive": "Mit rm löschen Sie eine Datei endgültig.",
        },
        {"query": "How do I list hidden files?", "positive": "Run ls -a to list hidden files as well."},
    ]
    extra.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    warehouse = str(harness / "warehouse.duckdb")
    base = {"gettext": False, "manpage_root": str(man), "manpage_languages": [], "workers": 2}

    first = mine_pairs(MineParams(**base), warehouse)
    after_first = counts(warehouse)
    assert after_first["pairs"] > 0 and first["totals"].get("pair", 0) > 0
    second = mine_pairs(MineParams(**base, jsonl=[str(extra)]), warehouse)
    after_second = counts(warehouse)
    assert after_second["documents"] == after_first["documents"]
    assert after_second["pairs"] == after_first["pairs"] + len(rows)
    assert second["totals"].get("pair") == len(rows), second["totals"]  # the man pages: "unchanged"
    # Nothing a worker process printed on its way out (a forked worker raised Prefect's TerminationSignal there).
    err = capfd.readouterr().err
    assert "Traceback" not in err and "TerminationSignal" not in err, err[-3000:]
