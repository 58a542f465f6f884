"""Benchmark the mining pipeline on this machine's real gettext catalogs.

Prints records/s for: reading + cleaning + language ID (one process), ingesting with dedup (our Arrow
batches + SQL dedup against the warehouse), re-ingesting the same records (all `unchanged`), and the
baseline measured in the same run: a naive row-by-row `INSERT ... ON CONFLICT DO NOTHING` of the same
records. Also the peak resident memory (getrusage) and the end-to-end `mine()` rate with 1 and 2 workers.

    .venv/bin/python bench/mine.py [--catalogs 150] [--baseline-records 20000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from m3core.data.pipeline import MineConfig, _Writer, mine, process_record  # _Writer: the write stage alone
from m3core.data.records import Pair, Rejected
from m3core.data.sources.gettext import GettextSource
from m3core.data.warehouse import Warehouse


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Subset(GettextSource):
    """Every k-th catalog: many languages and domains, a fixed sample."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def units(self) -> list[Path]:
        units = super().units()
        step = max(1, len(units) // self.n)
        return units[::step][: self.n]


def naive_insert(wh: Warehouse, records: list) -> None:
    """Baseline: one INSERT per record, dedup by primary key conflict."""
    for r in records:
        if isinstance(r, Pair):
            wh.con.execute(
                "INSERT INTO pairs (pair_id, kind, query, positive, lang, query_lang, source, location, near_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    r.pair_id,
                    r.kind,
                    r.query,
                    r.positive,
                    r.lang,
                    r.query_lang,
                    r.source,
                    r.location,
                    r.near_key,
                ],
            )
        elif isinstance(r, Rejected):
            wh.con.execute(
                "INSERT INTO quarantine (quarantine_id, source, location, reason, detail) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [r.quarantine_id, r.source, r.location, r.reason, r.detail],
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalogs", type=int, default=150)
    ap.add_argument("--baseline-records", type=int, default=20_000)
    args = ap.parse_args()
    src = Subset(args.catalogs)
    cfg = MineConfig(workers=1, progress=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench-mine-"))
    print(
        f"bench/mine.py: {args.catalogs} gettext catalogs from /usr/share/locale, cpu_count={os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    t0, c0 = time.perf_counter(), time.process_time()
    records = [process_record(r, cfg) for unit in src.units() for r in src.read(unit)]
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    n = len(records)
    print(
        f"read+clean+langid : {n:>8d} records  {n / dt:>9.0f} rec/s wall  {n / dc:>9.0f} rec/s cpu   peak RSS {peak_mib():.0f} MiB"
    )

    with Warehouse(tmp / "ours.duckdb") as wh:
        t0 = time.perf_counter()
        w = _Writer(wh, "bench", cfg)
        for r in records:
            w.add(r)
        w.flush()
        ours = time.perf_counter() - t0
        kept = wh.con.execute("SELECT count(*) FROM pairs").fetchone()[0]
        print(
            f"ingest + dedup    : {n:>8d} records  {n / ours:>9.0f} rec/s   ({kept} pairs kept)   peak RSS {peak_mib():.0f} MiB"
        )
        t0 = time.perf_counter()
        w = _Writer(wh, "bench2", cfg)
        for r in records:
            w.add(r)
        w.flush()
        again = time.perf_counter() - t0
        assert wh.con.execute("SELECT count(*) FROM pairs").fetchone()[0] == kept
        print(f"re-ingest (no-op) : {n:>8d} records  {n / again:>9.0f} rec/s")

    m = min(args.baseline_records, n)
    with Warehouse(tmp / "ours-sub.duckdb") as wh:
        t0 = time.perf_counter()
        w = _Writer(wh, "bench", cfg)
        for r in records[:m]:
            w.add(r)
        w.flush()
        ours_m = time.perf_counter() - t0
    with Warehouse(tmp / "naive.duckdb") as wh:
        t0 = time.perf_counter()
        naive_insert(wh, records[:m])
        naive = time.perf_counter() - t0
    print(
        f"baseline (same {m} records): row-by-row INSERT {m / naive:>8.0f} rec/s   ours {m / ours_m:>8.0f} rec/s   "
        f"ratio {naive / ours_m:.1f}x"
    )

    for workers in (1, 2):
        with Warehouse(tmp / f"e2e-{workers}.duckdb") as wh:
            t0, c0 = time.perf_counter(), time.process_time()
            s = mine([src], wh, MineConfig(workers=workers, progress=False))
            dt = time.perf_counter() - t0
        tot = sum(s.stats.values())
        print(f"mine() end to end, workers={workers}: {tot} records in {dt:.1f} s = {tot / dt:.0f} rec/s")
    print(f"peak RSS (whole run): {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
