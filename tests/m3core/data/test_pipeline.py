"""The mining pipeline end to end on small inputs: quarantine reasons, dedup, idempotent re-ingestion."""

from __future__ import annotations

import json

import pytest

from m3core.data.pipeline import MineConfig, mine
from m3core.data.sources.documents import DocumentDirSource
from m3core.data.sources.files import FieldMap, JsonlSource, RowMapper
from m3core.data.sources.manpages import ManPageSource
from m3core.data.warehouse import Warehouse
from tests.support.data_fixtures import write_man_tree

CFG = MineConfig(workers=1, progress=False)


def _counts(wh):
    return {
        t: wh.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("pairs", "documents", "quarantine")
    }


def _reasons(wh):
    return dict(wh.con.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason").fetchall())


@pytest.fixture
def qa_jsonl(tmp_path):
    rows = [
        {
            "q": "Wie kopiere ich Dateien in ein anderes Verzeichnis?",
            "p": "Mit dem Befehl cp kopieren Sie Dateien in ein anderes Verzeichnis.",
        },
        {
            "q": "Wie kopiere ich Dateien in ein anderes Verzeichnis?",
            "p": "Mit dem Befehl cp kopieren Sie Dateien in ein anderes Verzeichnis.",
        },
        {
            "q": "wie kopiere ich dateien in ein anderes verzeichnis",
            "p": "Mit dem Befehl cp kopieren Sie Dateien in ein anderes Verzeichnis!",
        },
        {"q": "Wie zeige ich den freien Speicherplatz an?", "p": ""},
        {
            "q": "Wie lösche ich eine Datei?",
            "p": "You remove a file with the rm command, which deletes it from the directory for good.",
        },
        {
            "q": "Wie benenne ich eine Datei um?",
            "p": "Mit dem Befehl mv benennen Sie eine Datei um oder verschieben sie.",
        },
    ]
    f = tmp_path / "qa.jsonl"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{broken\n")
    return JsonlSource([f], RowMapper("qa", FieldMap(query="q", positive="p"), lang="de"))


def test_quarantine_reasons_and_run_summary(tmp_path, qa_jsonl):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        summary = mine([qa_jsonl], wh, CFG)
        assert _counts(wh)["pairs"] == 2
        assert _reasons(wh) == {
            "duplicate": 1,
            "near-duplicate": 1,
            "empty": 1,
            "wrong-language": 1,
            "malformed-json": 1,
        }
        wrong = wh.con.execute(
            "SELECT location, detail FROM quarantine WHERE reason = 'wrong-language'"
        ).fetchone()
        assert wrong[0].endswith("qa.jsonl:5") and "declared de, detected en" in wrong[1]
        conf = wh.con.execute("SELECT min(lang_conf), min(query_lang_conf) FROM pairs").fetchone()
        assert conf[0] > 0.5 and conf[1] > 0.5  # stored confidence for the declared language
        stats = dict(
            ((lang, outcome), n)
            for _, _, lang, outcome, n in wh.con.execute(
                "SELECT * FROM run_stats WHERE run_id = ?", [summary.run_id]
            ).fetchall()
        )
        assert stats[("de", "pair")] == 2 and stats[("und", "quarantine:malformed-json")] == 1
        run = wh.con.execute("SELECT status, n_read, n_pairs, n_quarantined FROM ingest_runs").fetchone()
        assert run == ("ok", 7, 2, 5)


def test_a_killed_run_is_marked_by_the_next(tmp_path, qa_jsonl):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.con.execute(  # what a SIGKILLed run leaves behind
            "INSERT INTO ingest_runs (run_id, source, params, status, started_at) VALUES ('dead', 'x', '{}', 'running', now())"
        )
        mine([qa_jsonl], wh, CFG)
        rows = dict(wh.con.execute("SELECT run_id, status FROM ingest_runs").fetchall())
        assert rows.pop("dead") == "killed" and set(rows.values()) == {"ok"}


def test_reingesting_adds_nothing(tmp_path, qa_jsonl):
    man = ManPageSource(write_man_tree(tmp_path / "man"))
    with Warehouse(tmp_path / "w.duckdb") as wh:
        mine([qa_jsonl, man], wh, CFG)
        before = _counts(wh)
        assert before["documents"] == 12
        again = mine([qa_jsonl, man], wh, CFG)
        assert _counts(wh) == before
        assert set(again.totals()) == {"unchanged"}
        assert wh.con.execute("SELECT count(*) FROM ingest_runs WHERE status = 'ok'").fetchone()[0] == 2


def test_man_pages_give_monolingual_and_crosslingual_pairs(tmp_path):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        mine([ManPageSource(write_man_tree(tmp_path / "man"))], wh, CFG)
        rows = wh.con.execute(
            "SELECT query_lang, lang, count(*) FROM pairs WHERE kind = 'title-body' GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        assert rows == [("de", "de", 6), ("de", "en", 6), ("en", "en", 6)]
        q, pos = wh.con.execute(
            "SELECT query, positive FROM pairs WHERE query_lang = 'de' AND lang = 'en' AND group_key = 'man:copyfiles.1'"
        ).fetchone()
        assert q == "Dateien sicher zwischen zwei Verzeichnissen kopieren" and pos.startswith(
            "The copyfiles program"
        )


def test_near_duplicate_documents_by_minhash(tmp_path):
    services = [
        "Webserver",
        "Datenbank",
        "Mailserver",
        "Zeitdienst",
        "Druckdienst",
        "Namensdienst",
        "Firewall",
    ]
    body = " ".join(
        f"Im Schritt {i} wird der {s} eingerichtet und danach gründlich geprüft."
        for i, s in enumerate(services * 3)
    )
    (tmp_path / "docs" / "de").mkdir(parents=True)
    (tmp_path / "docs" / "de" / "a.txt").write_text("Handbuch\n\n" + body)
    (tmp_path / "docs" / "de" / "b.txt").write_text("Handbuch\n\n" + body + "Version 2.")
    (tmp_path / "docs" / "de" / "c.txt").write_text("Kurz")
    with Warehouse(tmp_path / "w.duckdb") as wh:
        mine([DocumentDirSource(tmp_path / "docs")], wh, CFG)
        assert _counts(wh)["documents"] == 1
        assert _reasons(wh) == {"near-duplicate": 1, "too-short": 1}


def test_max_per_language_counts_what_it_skips(tmp_path, qa_jsonl):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        summary = mine([qa_jsonl], wh, MineConfig(workers=1, progress=False, max_per_language=1))
        assert _counts(wh)["pairs"] == 1
        assert summary.totals()["skipped:over-limit"] == 1


def test_parallel_workers_give_the_same_warehouse(tmp_path, qa_jsonl):
    man_root = write_man_tree(tmp_path / "man")
    results = []
    for workers in (1, 2):
        with Warehouse(tmp_path / f"w{workers}.duckdb") as wh:
            mine(
                [qa_jsonl, ManPageSource(man_root, chunk=2)], wh, MineConfig(workers=workers, progress=False)
            )
            results.append(wh.con.execute("SELECT pair_id FROM pairs ORDER BY 1").fetchall())
    assert results[0] == results[1]
