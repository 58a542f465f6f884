"""Warehouse: versioned migrations (applied once, never recreated) and a second writer process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from m3core.data.warehouse import Warehouse, WarehouseLockedError


def test_migrations_apply_once_and_are_recorded(tmp_path):
    path = tmp_path / "w.duckdb"
    extra = [
        ("0001_items", "CREATE TABLE items(id INTEGER)"),
        ("0002_items_name", "ALTER TABLE items ADD COLUMN name VARCHAR"),
    ]
    with Warehouse(path) as wh:
        assert wh.migrate("synth", extra[:1]) == ["0001_items"]
        wh.con.execute("INSERT INTO items VALUES (1)")
        core = wh.schema_version("core")
        assert core >= 2
    with Warehouse(path) as wh:  # reopen: nothing re-applied, data kept, the new migration added
        assert wh.migrate("synth", extra) == ["0002_items_name"]
        assert wh.con.execute("SELECT id, name FROM items").fetchall() == [(1, None)]
        rows = wh.con.execute(
            "SELECT namespace, version, name FROM schema_migrations ORDER BY ALL"
        ).fetchall()
        assert [r for r in rows if r[0] == "synth"] == [
            ("synth", 1, "0001_items"),
            ("synth", 2, "0002_items_name"),
        ]
        assert wh.schema_version("core") == core
        with pytest.raises(ValueError, match="was applied as"):
            wh.migrate("synth", [("0001_renamed", "SELECT 1")])


def test_failed_migration_rolls_back(tmp_path):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        with pytest.raises(Exception, match="no_such_table"):
            wh.migrate("neg", [("0001_bad", "CREATE TABLE t(a INT); INSERT INTO no_such_table VALUES (1)")])
        assert wh.schema_version("neg") == 0
        assert (
            wh.con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 't'"
            ).fetchone()[0]
            == 0
        )


def test_read_only_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Warehouse(tmp_path / "nope.duckdb", read_only=True)


# The first writer: a plain DuckDB connection in another process (importing m3core would pull in torch,
# slow to start on a busy machine; the lock is DuckDB's either way).
HOLDER = """
import sys, time
import duckdb
wh = duckdb.connect(sys.argv[1])
wh.execute("CREATE TABLE IF NOT EXISTS held(a INT)")
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
wh.close()
"""


def _hold(path, seconds):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"holder process did not start (exit {proc.returncode}): {err[-2000:]}")
    return proc


def test_second_writer_fails_clearly_naming_the_file(tmp_path):
    path = tmp_path / "w.duckdb"
    proc = _hold(path, 30)
    try:
        t0 = time.monotonic()
        with pytest.raises(WarehouseLockedError) as err:
            Warehouse(path, lock_timeout=0.5)
        assert str(path) in str(err.value) and "locked by another process" in str(err.value)
        assert time.monotonic() - t0 >= 0.5
    finally:
        proc.kill()
        proc.wait()


def test_second_writer_waits_for_the_first(tmp_path):
    path = tmp_path / "w.duckdb"
    proc = _hold(path, 1.5)
    try:
        with Warehouse(path, lock_timeout=60) as wh:  # waits until the holder closes, then works
            assert wh.con.execute("SELECT count(*) FROM held").fetchone()[0] == 0
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
