"""Fault injection: `m3 mine` killed (SIGKILL) mid-run, then run again, ends with exactly the rows of a run that
was never interrupted — nothing lost, nothing duplicated — and the killed run is marked as such."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from m3core.data.warehouse import Warehouse
from tests.support import textgen

pytestmark = pytest.mark.faults


def write_inputs(root, files=60, rows=400):
    root.mkdir()
    for f in range(files):
        lines = [
            {
                "query": f"{q} {f}-{i}",
                "positive": f"{p} (file {f}, row {i})",
                "lang": "en",
            }
            for i, (q, p) in enumerate(
                zip(textgen.sentences(rows, seed=f), textgen.sentences(rows, seed=1000 + f), strict=True)
            )
        ]
        (root / f"part-{f:03d}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return sorted(root.glob("*.jsonl"))


def mine_cmd(warehouse, files):
    cmd = [sys.executable, "-m", "m3core.cli", "mine", "--warehouse", str(warehouse), "--no-progress"]
    return [*cmd, "--workers", "1", "--lang", "en", "--jsonl", *map(str, files)]


def counts(path):
    with Warehouse(path, read_only=True) as wh:
        tables = {
            t: wh.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("pairs", "quarantine")
        }
        keys = wh.con.execute("SELECT count(DISTINCT (query, positive)) FROM pairs").fetchone()[0]
        runs = dict(wh.con.execute("SELECT status, count(*) FROM ingest_runs GROUP BY ALL").fetchall())
    return tables, keys, runs


def test_sigkill_mid_mining_then_rerun_loses_and_duplicates_nothing(tmp_path):
    files = write_inputs(tmp_path / "in")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference.duckdb"
    started = time.monotonic()
    done = subprocess.run(mine_cmd(reference, files), env=env, capture_output=True, timeout=600)
    assert done.returncode == 0
    seconds = time.monotonic() - started

    killed = tmp_path / "killed.duckdb"
    proc = subprocess.Popen(mine_cmd(killed, files), env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the run has started reading its units
        if "units" in line:
            break
    time.sleep(0.3 * seconds)  # well inside the ingest (start-up is included in `seconds`)
    assert proc.poll() is None, "the run ended before it could be killed: make the input larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    again = subprocess.run(mine_cmd(killed, files), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    (ref_tables, ref_keys, _), (tables, keys, runs) = counts(reference), counts(killed)
    assert tables == ref_tables and keys == ref_keys == tables["pairs"]
    assert runs == {"killed": 1, "ok": 1}
