"""Run and warehouse reports: counts per source × language × outcome, as printed by `m3 mine`."""

from __future__ import annotations

from m3core.data.pipeline import RunSummary
from m3core.data.warehouse import Warehouse


def warehouse_counts(wh: Warehouse) -> dict[str, list[tuple]]:
    """Pairs per (kind, language), documents per language and quarantine per (source, reason)."""
    q = wh.con.execute
    return {
        "pairs": q(
            "SELECT kind, CASE WHEN query_lang = lang THEN lang ELSE query_lang || '->' || lang END AS langs, "
            "count(*) n FROM pairs GROUP BY ALL ORDER BY kind, n DESC"
        ).fetchall(),
        "documents": q(
            "SELECT lang, count(*) n, round(avg(n_chars)) FROM documents GROUP BY lang ORDER BY n DESC"
        ).fetchall(),
        "quarantine": q(
            "SELECT source, reason, count(*) n FROM quarantine GROUP BY ALL ORDER BY source, n DESC"
        ).fetchall(),
    }


def _wrap(items: list[str], width: int = 108) -> str:
    lines, line = [], "  "
    for it in items:
        if len(line) + len(it) + 2 > width:
            lines.append(line.rstrip())
            line = "  "
        line += it + "  "
    lines.append(line.rstrip())
    return "\n".join(lines)


def print_run_report(wh: Warehouse, summary: RunSummary) -> None:
    """This run's outcomes, then the warehouse's pairs/documents per language and quarantine by reason."""
    tot = summary.totals()
    print(f"run {summary.run_id}: {summary.seconds:.1f} s")
    print("  this run: " + ", ".join(f"{k}={v}" for k, v in sorted(tot.items(), key=lambda kv: -kv[1])))
    by_src: dict[tuple[str, str], int] = {}
    for (src, _, outcome), n in summary.stats.items():
        by_src[(src, outcome)] = by_src.get((src, outcome), 0) + n
    for (src, outcome), n in sorted(by_src.items()):
        print(f"    {src:12s} {outcome:32s} {n:>9d}")
    c = warehouse_counts(wh)
    kinds: dict[str, list[tuple[str, int]]] = {}
    for kind, langs, n in c["pairs"]:
        kinds.setdefault(kind, []).append((langs, n))
    print(f"warehouse {wh.path}")
    for kind, rows in kinds.items():
        print(f"  pairs {kind}: {sum(n for _, n in rows)} in {len(rows)} languages")
        print(_wrap([f"{lang}:{n}" for lang, n in rows]))
    docs = c["documents"]
    print(f"  documents: {sum(r[1] for r in docs)} in {len(docs)} languages (lang:count/avg chars)")
    print(_wrap([f"{lang}:{n}/{int(avg)}" for lang, n, avg in docs]))
    print(f"  quarantine: {sum(r[2] for r in c['quarantine'])}")
    for src, reason, n in c["quarantine"]:
        print(f"    {src:12s} {reason:24s} {n:>9d}")
