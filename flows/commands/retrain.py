"""`m3 retrain [--params FILE.json] [--quick]`: the whole retrain flow in this process (`make run` runs it).

Contributed to the `m3` front door by `flows` (entry point `m3.commands`); `python -m flows.retrain` is the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = "run the retrain flow (mine → synth → negatives → train → evaluate → register) on the embedded default"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", help="JSON file of RetrainParams (default: the embedded default)")
    p.add_argument("--quick", action="store_true", help="a smaller run (fewer languages, steps, queries)")


def run(args: argparse.Namespace) -> int:
    from flows.commands.register import REGISTRATION_FAILED
    from flows.params import RetrainParams
    from flows.register_and_promote import RegistrationFailed
    from flows.retrain import retrain
    from flows.settings import configure_environment

    home = configure_environment()
    if args.params:
        path = Path(args.params)
        if not path.is_file():
            raise FileNotFoundError(f"--params {path}: no such file")
        try:
            params = RetrainParams.model_validate_json(path.read_text())
        except ValueError as err:
            raise ValueError(f"--params {path}: {err}") from None
    else:
        params = RetrainParams()
    if args.quick:
        params = params.quick()
    started = time.perf_counter()
    try:
        result = retrain(params)
    except RegistrationFailed as err:  # trained and evaluated; the message says how to register it later
        print(f"m3 retrain: error: {err}", file=sys.stderr)
        return REGISTRATION_FAILED
    print_summary(result, home, time.perf_counter() - started)
    return 0


def print_summary(result: dict, home: Path, seconds: float) -> None:
    from m3core.evaluation import markdown_table
    from m3core.evaluation.compare import headline, headline_table

    report = json.loads(Path(result["eval_report"]).read_text())
    base = json.loads(Path(result["base_eval_report"]).read_text())
    reg = result["registered"]
    print("\n" + "=" * 100)
    print(f"retrain {result['run']} finished in {seconds / 60:.1f} min (recipe {result['recipe']})")
    print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["timings_s"].items()))
    print(
        f"model: models:/{reg['name']}/{reg['version']}  ({'champion' if reg['promoted'] else 'challenger'}: {reg['reason']})"
    )
    print(f"consumers: mlflow.pyfunc.load_model('models:/{reg['name']}@champion').predict(texts)")
    weights = result.get("hybrid_weights")
    if weights:
        print(
            f"hybrid weights (dense, sparse, colbert) chosen on the dev split: {weights['weights']} "
            f"(dev nDCG@10 {100 * weights['dev_ndcg@10']:.1f}; paper's 1/0.3/1: {100 * weights['dev_ndcg@10_paper_short']:.1f})"
        )
    print("\nnDCG@10 ×100 (trained model; BM25 alongside)\n" + markdown_table(report))
    print("\nbase model, zero-shot\n" + markdown_table(base))
    print(
        "\nheld-out claims, paired bootstrap 95 % intervals (nDCG@10 ×100)\n"
        + headline_table(headline(report, base))
    )
    print("\nopen the UIs:")
    print(
        f"  MLFLOW_TRACKING_URI=sqlite:///{home / 'mlflow.db'} .venv/bin/mlflow ui --backend-store-uri sqlite:///{home / 'mlflow.db'} --host 127.0.0.1"
    )
    print(f"  PREFECT_HOME={home / 'prefect'} .venv/bin/prefect server start --host 127.0.0.1")
    print("=" * 100)
