"""Write an evaluation report as JSON, a markdown table and a PNG bar chart (per language, bars by mode)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def markdown_table(report: dict[str, Any], metric: str = "ndcg@10") -> str:
    """One row per set (plus the averages), one column per mode, values ×100 with one decimal.

    >>> r = {"modes": ["dense", "bm25"], "sets": [{"label": "de", "n_queries": 3, "n_docs": 9,
    ...      "results": {"dense": {"ndcg@10": 0.5}, "bm25": {"ndcg@10": 0.25}}}],
    ...      "average": {"dense": {"ndcg@10": 0.5}, "bm25": {"ndcg@10": 0.25}}, "average_by_kind": {}}
    >>> print(markdown_table(r))
    | nDCG@10 ×100 | queries | docs | dense | bm25 |
    |---|---:|---:|---:|---:|
    | de | 3 | 9 | **50.0** | 25.0 |
    | **average** |  |  | **50.0** | 25.0 |
    """
    modes = report["modes"]
    name = metric.replace("ndcg", "nDCG").replace("recall", "Recall").replace("mrr", "MRR")

    def cells(results: dict[str, dict[str, float]]) -> list[str]:
        vals = {m: results[m][metric] for m in modes if m in results and metric in results[m]}
        best = max(vals.values(), default=None)
        out = []
        for m in modes:
            if m not in vals:
                out.append("–")
            else:
                s = f"{100 * vals[m]:.1f}"
                out.append(f"**{s}**" if vals[m] == best else s)
        return out

    lines = [
        f"| {name} ×100 | queries | docs | " + " | ".join(modes) + " |",
        "|---|---:|---:|" + "---:|" * len(modes),
    ]
    for e in report["sets"]:
        lines.append(
            f"| {e['label']} | {e['n_queries']} | {e['n_docs']} | " + " | ".join(cells(e["results"])) + " |"
        )
    for kind, avg in report.get("average_by_kind", {}).items():
        if len(report.get("average_by_kind", {})) > 1:
            lines.append(f"| *average {kind}* |  |  | " + " | ".join(cells(avg)) + " |")
    lines.append("| **average** |  |  | " + " | ".join(cells(report["average"])) + " |")
    for f in report.get("failed_sets", []):
        lines.append(f"\nnot evaluated: {f['name']}: {f['reason']}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """A PNG with one panel per metric: groups = sets (languages) + average, bars = modes."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    import numpy as np

    modes, metrics = report["modes"], report["metrics"]
    labels = [e["label"] for e in report["sets"]] + ["avg"]
    rows = [e["results"] for e in report["sets"]] + [report["average"]]
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(max(6, 1.1 * len(labels) * max(1, len(modes)) / 3), 3 * len(metrics))
    )
    axes = np.atleast_1d(axes)
    width = 0.8 / max(1, len(modes))
    x = np.arange(len(labels))
    for ax, metric in zip(axes, metrics, strict=True):
        for j, mode in enumerate(modes):
            vals = [r.get(mode, {}).get(metric, np.nan) for r in rows]
            ax.bar(x + (j - (len(modes) - 1) / 2) * width, vals, width, label=mode)
        ax.set_xticks(x, labels)
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=min(len(modes), 6), fontsize="small", loc="upper left")
    axes[0].set_title(f"retrieval quality per language — {report.get('model') or 'BM25'}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` (one table per metric) and ``report.png`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "png": out / "report.png"}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False))
    tables = "\n\n".join(markdown_table(report, m) for m in report["metrics"])
    paths["markdown"].write_text(f"# Evaluation: {report.get('model') or 'BM25 only'}\n\n{tables}\n")
    plot(report, paths["png"])
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
