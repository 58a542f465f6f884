"""The `mine_pairs` flow twice in a row in one process, with worker processes, inside real Prefect flow runs.

A forked pool worker of the (multi-threaded) flow process once inherited a held lock and Prefect's SIGTERM
handler, and the pool's shutdown then hung forever on a second run; the workers now come from a fork server.
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
