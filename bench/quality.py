"""Retrieval quality of what the platform trains, measured through the product's own flow (`flows.retrain`).

    .venv/bin/python bench/quality.py [--home DIR] [--out DIR] [--steps N] [--quick] [--no-control]

Two retrains on one platform home, the embedded default (multilingual-e5-small, the `finetune` recipe, the
man-page data of `flows.params.EMBEDDED_LANGUAGES`), evaluated on the warehouse's held-out split with full corpora:

1. **self-distillation on** (the default): trained model vs its backbone zero-shot (dense: a plain backbone's
   fresh heads are no property of it) vs BM25, monolingual and cross-lingual (X→en), every mode, with paired
   bootstrap 95 % intervals (`m3core.evaluation.compare`);
2. **self-distillation off** (the control): the same warehouse, export, negatives (mined with the base model),
   steps and learning rates; only `self_distill` differs. Every mode of both, and the share of texts with any
   lexical weight (a dead sparse ReLU shows there).

Each run registers into its own MLflow model name (`m3-quality`, `m3-quality-nosd`), so the user's `m3` registry
is untouched. The second run re-uses the warehouse (mining and synthetic queries off). Results: `--out/report.json`
and `report.md`; each run keeps its whole working directory under `<home>/runs/`.
"""

from __future__ import annotations

import os

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "OMP_WAIT_POLICY": "PASSIVE",
}.items():
    os.environ.setdefault(_k, _v)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from m3core.modes import MODES  # noqa: E402

KINDS = ("monolingual", "cross-lingual")


def params_for(args: argparse.Namespace, self_distill: bool):
    """The embedded default's RetrainParams, as `make run` uses them, with this bench's own names."""
    from flows.params import RetrainParams

    p = RetrainParams()
    if args.quick:
        p = p.quick()
    p.run_name = "quality-sd" if self_distill else "quality-nosd"
    p.registry.model_name = "m3-quality" if self_distill else "m3-quality-nosd"
    p.negatives.interim_alias = None  # both runs mine with the base model: the same negatives
    if args.steps:
        p.train.overrides.max_steps = args.steps
    if not self_distill:
        p.mine.enabled = False  # the warehouse the first run filled: the same export
        p.synth.enabled = False
        p.train.overrides.self_distill = False
    return p


def kind_average(report: dict, kind: str, mode: str) -> float | None:
    value = report.get("average_by_kind", {}).get(kind, {}).get(mode, {}).get("ndcg@10")
    return None if value is None else float(value)


def nonempty_share(report: dict) -> dict[str, float] | None:
    """Mean over sets of the share of passages / queries with any lexical weight."""
    entries = [e["nonempty_lexical"] for e in report["sets"] if e.get("nonempty_lexical")]
    if not entries:
        return None
    return {side: sum(e[side] for e in entries) / len(entries) for side in ("passages", "queries")}


def control_rows(sd: dict, nosd: dict) -> list[dict]:
    """Every mode, SD on − off, per kind, with paired 95 % intervals."""
    from m3core.evaluation.compare import paired_difference

    rows = []
    for kind in KINDS:
        for mode in MODES:
            try:
                d = paired_difference(sd, mode, nosd, mode, kind)
            except (ValueError, KeyError):
                continue
            rows.append({"kind": kind, "mode": mode, "sd": d.a, "nosd": d.b, "delta": d.delta, "low": d.low,
                         "high": d.high})  # fmt: skip
    return rows


def markdown(result: dict) -> str:
    from m3core.evaluation import markdown_table
    from m3core.evaluation.compare import headline_table

    sd = json.loads(Path(result["runs"]["sd"]["eval_report"]).read_text())
    base = json.loads(Path(result["runs"]["sd"]["base_eval_report"]).read_text())
    lines = [
        "# Quality of the embedded default, through `flows.retrain`",
        "",
        f"Machine load at start/end: {result['load']}; wall {result['seconds'] / 60:.1f} min.",
        "",
        "## Trained (self-distillation) vs backbone zero-shot vs BM25 (nDCG@10 ×100, held-out, full corpora)",
        "",
        "| kind | " + " | ".join(MODES) + " | base dense | BM25 |",
        "|---|" + "---:|" * (len(MODES) + 2),
    ]
    for kind in KINDS:
        cells = [kind_average(sd, kind, m) for m in MODES]
        cells += [kind_average(base, kind, "dense"), kind_average(sd, kind, "bm25")]
        lines.append(
            f"| {kind} | " + " | ".join("–" if c is None else f"{100 * c:.1f}" for c in cells) + " |"
        )
    lines += ["", "Claims, paired bootstrap 95 % intervals:", "", headline_table(result["headline"]), ""]
    lines += [
        f"Hybrid weights (dense, sparse, colbert) chosen on the dev split: {sd.get('hybrid_weights')}",
        "",
    ]
    if result.get("control"):
        nosd = json.loads(Path(result["runs"]["nosd"]["eval_report"]).read_text())
        lines += [
            "## Self-distillation on vs off (same data, negatives, steps, learning rates)",
            "",
            "| kind | mode | SD on | SD off | on − off [95 % CI] |",
            "|---|---|---:|---:|---:|",
        ]
        for r in result["control"]:
            lines.append(
                f"| {r['kind']} | {r['mode']} | {100 * r['sd']:.1f} | {100 * r['nosd']:.1f} | "
                f"{100 * r['delta']:+.1f} [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}] |"
            )
        lines += [
            "",
            f"Non-empty lexical weights (share of passages / queries): SD on {result['nonempty']['sd']}, "
            f"SD off {result['nonempty']['nosd']}; hybrid weights SD off: {nosd.get('hybrid_weights')}",
            "",
        ]
    lines += ["## Per set (trained, SD on)", "", markdown_table(sd), "", "## Base model zero-shot", "",
              markdown_table(base)]  # fmt: skip
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home", type=Path, default=ROOT / ".cache" / "quality-home", help="platform home (M3_HOME)"
    )
    parser.add_argument("--out", type=Path, default=None, help="report directory (default: <home>/quality)")
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the embedded default's)"
    )
    parser.add_argument("--quick", action="store_true", help="`make run-quick`'s smaller run")
    parser.add_argument("--no-control", action="store_true", help="skip the self-distillation-off run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["M3_HOME"] = str(args.home.resolve())
    from flows.retrain import retrain
    from flows.settings import configure_environment
    from m3core.evaluation.compare import headline

    configure_environment()
    out = args.out or args.home / "quality"
    out.mkdir(parents=True, exist_ok=True)
    started, load0 = time.perf_counter(), " ".join(f"{x:.1f}" for x in os.getloadavg())
    runs = {"sd": retrain(params_for(args, self_distill=True))}
    if not args.no_control:
        runs["nosd"] = retrain(params_for(args, self_distill=False))
    reports = {k: json.loads(Path(r["eval_report"]).read_text()) for k, r in runs.items()}
    base = json.loads(Path(runs["sd"]["base_eval_report"]).read_text())
    result = {
        "seconds": time.perf_counter() - started,
        "load": f"{load0} -> " + " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "runs": runs,
        "headline": headline(reports["sd"], base),
        "control": control_rows(reports["sd"], reports["nosd"]) if "nosd" in reports else None,
        "nonempty": {k: nonempty_share(r) for k, r in reports.items()},
    }
    (out / "report.json").write_text(json.dumps(result, indent=2, default=str))
    text = markdown(result)
    (out / "report.md").write_text(text)
    print(text)
    print(f"wrote {out / 'report.json'}, {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
