"""Paired comparisons of two evaluation reports (or two modes of one) with bootstrap 95 % intervals.

The reports' headline number is the macro average over eval sets of a per-query metric (nDCG@10). A difference
between two systems is measured on the same queries, so the interval comes from a *paired*, stratified
bootstrap: each round resamples the queries of every set with replacement (the same draw for both systems),
recomputes each set's mean difference and averages over the sets.

    >>> a = {"sets": [{"name": "s", "kind": "monolingual", "per_query": {"x": {"q1": 1.0, "q2": 0.5}}}]}
    >>> b = {"sets": [{"name": "s", "kind": "monolingual", "per_query": {"y": {"q1": 0.5, "q2": 0.5}}}]}
    >>> d = paired_difference(a, "x", b, "y"); round(d.delta, 3), d.n_queries
    (0.25, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from m3core.modes import SINGLE_MODES


@dataclass(frozen=True)
class Difference:
    """`a − b` of the macro-averaged metric, with its paired-bootstrap 95 % interval."""

    a: float
    b: float
    delta: float
    low: float
    high: float
    n_sets: int
    n_queries: int

    def format(self, scale: float = 100.0) -> str:
        return f"{scale * self.delta:+.1f} [{scale * self.low:+.1f}, {scale * self.high:+.1f}]"


def paired_difference(
    report_a: dict[str, Any],
    mode_a: str,
    report_b: dict[str, Any],
    mode_b: str,
    kind: str | None = None,
    rounds: int = 2000,
    seed: int = 0,
) -> Difference:
    """`mode_a` of `report_a` minus `mode_b` of `report_b` over the sets both have (of `kind`, if given)."""
    sets_b = {e["name"]: e for e in report_b["sets"]}
    pairs = []
    for ea in report_a["sets"]:
        eb = sets_b.get(ea["name"])
        if eb is None or (kind is not None and ea.get("kind") != kind):
            continue
        qa, qb = ea.get("per_query", {}).get(mode_a), eb.get("per_query", {}).get(mode_b)
        if qa is None or qb is None:
            raise ValueError(f"set {ea['name']}: no per-query values for {mode_a!r} / {mode_b!r}")
        common = sorted(set(qa) & set(qb))
        if common:
            pairs.append((np.array([qa[q] for q in common]), np.array([qb[q] for q in common])))
    if not pairs:
        raise ValueError(f"no common eval set{f' of kind {kind}' if kind else ''} with per-query values")
    rng = np.random.default_rng(seed)
    a = float(np.mean([x.mean() for x, _ in pairs]))
    b = float(np.mean([y.mean() for _, y in pairs]))
    boot = np.zeros(rounds)
    for x, y in pairs:
        diff = x - y
        draws = rng.integers(0, len(diff), size=(rounds, len(diff)))
        boot += diff[draws].mean(axis=1)
    boot /= len(pairs)
    low, high = np.percentile(boot, [2.5, 97.5])
    return Difference(a, b, a - b, float(low), float(high), len(pairs), sum(len(x) for x, _ in pairs))


def best_single_mode(report: dict[str, Any], kind: str | None = None, metric: str = "ndcg@10") -> str:
    """The strongest of dense / sparse / colbert in `report` (overall or for one set kind)."""
    averages = report["average"] if kind is None else report["average_by_kind"][kind]
    have = {m: v[metric] for m, v in averages.items() if m in SINGLE_MODES}
    if not have:
        raise ValueError("the report has no single-mode results")
    return max(have, key=have.get)


def headline(trained: dict[str, Any], base: dict[str, Any], base_mode: str = "dense") -> list[dict[str, Any]]:
    """The claims a retrain is judged by, per set kind: trained `all` vs the base (zero-shot) and vs BM25;
    `all` vs the best single mode; trained sparse vs BM25. Each with its paired 95 % interval."""
    rows = []
    kinds = sorted({e.get("kind", "monolingual") for e in trained["sets"]})
    for kind in kinds:
        best = best_single_mode(trained, kind)
        claims = [
            (f"all − base {base_mode}", trained, "all", base, base_mode),
            ("all − BM25", trained, "all", trained, "bm25"),
            (f"all − best single ({best})", trained, "all", trained, best),
            ("sparse − BM25", trained, "sparse", trained, "bm25"),
        ]
        for label, ra, ma, rb, mb in claims:
            try:
                d = paired_difference(ra, ma, rb, mb, kind)
            except (ValueError, KeyError):
                continue  # a mode this evaluation did not run
            rows.append({"kind": kind, "claim": label, "a": d.a, "b": d.b, "delta": d.delta, "low": d.low,
                         "high": d.high, "n_sets": d.n_sets, "n_queries": d.n_queries})  # fmt: skip
    return rows


def headline_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per claim, values ×100, the difference with its 95 % interval."""
    lines = [
        "| kind | claim | a | b | a − b [95 % CI] | sets | queries |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['claim']} | {100 * r['a']:.1f} | {100 * r['b']:.1f} | "
            f"{100 * r['delta']:+.1f} [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}] | {r['n_sets']} | {r['n_queries']} |"
        )
    return "\n".join(lines)
