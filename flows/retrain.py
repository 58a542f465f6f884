"""Flow `retrain`: the whole loop, in order — the Prefect deployment operators schedule and run.

mine_pairs → synthesize_queries → export (training JSONL + held-out eval sets) → base model → mine_hard_negatives
(interim model: the champion, else the base) → train (self-distillation) → evaluate (trained and base, next to
BM25) → register_and_promote. `python -m flows.retrain` runs it on the embedded default (README's first command).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from flows.evaluate import evaluate_flow
from flows.mine_hard_negatives import mine_hard_negatives
from flows.mine_pairs import mine_pairs
from flows.params import RetrainParams, TrainParams
from flows.register_and_promote import register_and_promote_flow
from flows.settings import configure_environment, fingerprint, run_dir, warehouse_path
from flows.synthesize_queries import synthesize_queries
from flows.train import train_flow


@task(retries=2, retry_delay_seconds=[10, 60])
def export(
    warehouse: str, out: str, languages: list[str], max_per_language: int | None, max_queries: int | None
) -> dict:
    """Training JSONL (train split) and BEIR eval sets (test split) from the warehouse."""
    from m3core.data.export import export_eval_sets, export_training
    from m3core.data.warehouse import Warehouse

    out_dir = Path(out)
    with Warehouse(warehouse, read_only=True) as wh:
        lines = export_training(
            wh, out_dir / "train", langs=languages or None, max_per_language=max_per_language
        )
        sets = export_eval_sets(wh, out_dir / "eval", langs=languages or None, max_queries=max_queries)
        snapshot = wh.con.execute("SELECT count(*), max(created_at) FROM pairs").fetchone()
    if not sets:
        raise ValueError("the warehouse gave no evaluation set: mine more man pages (or lower min_queries)")
    return {
        "train_file": str(out_dir / "train" / "train.jsonl"),
        "train_lines": {k: sum(v.values()) for k, v in lines.items()},
        "eval_dir": str(out_dir / "eval"),
        "eval_sets": [s["name"] for s in sets],
        "data_snapshot": f"pairs={snapshot[0]}@{snapshot[1]}",
    }


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def base_model(params: TrainParams, warehouse: str, data_snapshot: str, out: str) -> str:
    """`params.base_model`, or a small model built from scratch with a tokenizer trained on warehouse text.

    Cached by the data snapshot: a rerun on unchanged data reuses the same base model (and so its cached
    negatives and evaluation).
    """
    if params.base_model:
        return params.base_model
    from m3core import TinyModelSpec, build_tiny_model
    from m3core.data.warehouse import Warehouse

    with Warehouse(warehouse, read_only=True) as wh:
        texts = [
            r[0]
            for r in wh.con.execute(
                "SELECT text FROM (SELECT query AS text FROM pairs UNION ALL SELECT positive FROM pairs) USING SAMPLE 20000 ROWS"
            ).fetchall()
        ]
    spec = TinyModelSpec(
        vocab_size=params.vocab_size,
        hidden_size=params.hidden_size,
        num_layers=params.num_layers,
        num_heads=max(1, params.hidden_size // 32),
        intermediate_size=4 * params.hidden_size,
        max_tokens=max(512, params.passage_max_length),
    )
    return str(build_tiny_model(out, texts, spec))


def train_config(params: TrainParams, model: str, data: str, out: str) -> dict:
    return {
        "model": model,
        "output_dir": out,
        "train_data": [data],
        "group_size": params.group_size,
        "max_steps": params.max_steps,
        "learning_rate": params.learning_rate,
        "head_learning_rate": params.head_learning_rate,
        "tokens_per_batch": params.tokens_per_batch,
        "max_batch_size": params.max_batch_size,
        "passage_max_length": params.passage_max_length,
        "query_max_length": params.query_max_length,
        "temperature": params.temperature,
        "self_distill_start_step": params.self_distill_start_step,
        "show_progress": False,
        "logging_steps": 10,
        "report_to": ["mlflow"],
        **params.extra,
    }


@flow(name="retrain", log_prints=True)
def retrain(params: RetrainParams | None = None) -> dict:
    """Run the whole retraining pipeline; returns what it produced (model URI, eval report paths, decision)."""
    configure_environment()
    params = params or RetrainParams()
    log = get_run_logger()
    name = params.run_name or time.strftime("retrain-%Y%m%d-%H%M%S")
    work = run_dir(name)
    wh = str(warehouse_path())

    mined = mine_pairs(params.mine, wh)
    synth = synthesize_queries(params.synth, wh)
    data = export(
        wh, str(work / "data"), params.train_languages, params.max_train_per_language, params.eval.max_queries
    )
    log.info("training lines %s; eval sets %s", data["train_lines"], data["eval_sets"])
    base = base_model(params.train, wh, data["data_snapshot"], str(work / "base-model"))
    negs = mine_hard_negatives(
        data["train_file"],
        str(work / "data" / "train-negatives.jsonl"),
        base,
        params.negatives,
        params.registry.model_name,
    )
    cfg = train_config(params.train, base, negs["file"], str(work / "model"))
    summary = train_flow(cfg, params.train.torchrun_nproc)
    report = evaluate_flow(
        str(work / "model"), data["eval_dir"], str(work / "eval" / "trained"), params.eval, "eval-trained"
    )
    base_report = evaluate_flow(base, data["eval_dir"], str(work / "eval" / "base"), params.eval, "eval-base")
    registered = register_and_promote_flow(
        str(work / "model"),
        report,
        fingerprint(data["eval_dir"]),
        params.registry,
        base_report,
        cfg,
        data["data_snapshot"],
    )
    return {
        "run": name,
        "work_dir": str(work),
        "mined": mined["totals"],
        "synth": {k: synth.get(k) for k in ("accepted", "rejected", "sent", "cached")},
        "train": summary,
        "registered": registered,
        "eval_report": str(work / "eval" / "trained" / "report.json"),
        "base_eval_report": str(work / "eval" / "base" / "report.json"),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.retrain [--params FILE.json] [--quick]`: the local retrain on the embedded default."""
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=__doc__.splitlines()[0])
    parser.add_argument("--params", help="JSON file of RetrainParams (default: the embedded default)")
    parser.add_argument(
        "--quick", action="store_true", help="a smaller run (fewer languages, steps, queries)"
    )
    args = parser.parse_args(argv)
    home = configure_environment()
    params = RetrainParams(**json.loads(Path(args.params).read_text())) if args.params else RetrainParams()
    if args.quick:
        params = quick(params)
    started = time.perf_counter()
    result = retrain(params)
    print_summary(result, home, time.perf_counter() - started)
    return 0


def quick(params: RetrainParams) -> RetrainParams:
    """A run of a couple of minutes: three languages, few steps, few queries (tests and smoke runs)."""
    p = params.model_copy(deep=True)
    p.mine.manpage_languages = p.mine.manpage_languages or ["en", "de", "fr"]
    p.mine.max_catalogs_per_language, p.mine.max_per_language = 1, 120
    p.synth.per_language, p.synth.max_requests = 1, 4
    p.train.max_steps, p.train.self_distill_start_step = 20, 5
    p.train.hidden_size, p.train.vocab_size = 64, 3000
    p.eval.max_queries = 30
    p.train_languages = p.train_languages or ["en", "de", "fr"]
    return p


def print_summary(result: dict, home: Path, seconds: float) -> None:
    from m3core.evaluation import markdown_table

    report = json.loads(Path(result["eval_report"]).read_text())
    reg = result["registered"]
    print("\n" + "=" * 100)
    print(f"retrain {result['run']} finished in {seconds / 60:.1f} min")
    print(
        f"model: models:/{reg['name']}/{reg['version']}  ({'champion' if reg['promoted'] else 'challenger'}: {reg['reason']})"
    )
    print(f"consumers: mlflow.pyfunc.load_model('models:/{reg['name']}@champion').predict(texts)")
    print("\nnDCG@10 ×100 (trained model; BM25 alongside)\n" + markdown_table(report))
    base = json.loads(Path(result["base_eval_report"]).read_text())
    print("\nbase model, zero-shot\n" + markdown_table(base))
    print("\nopen the UIs:")
    print(
        f"  MLFLOW_TRACKING_URI=sqlite:///{home / 'mlflow.db'} .venv/bin/mlflow ui --backend-store-uri sqlite:///{home / 'mlflow.db'} --host 127.0.0.1"
    )
    print(f"  PREFECT_HOME={home / 'prefect'} .venv/bin/prefect server start --host 127.0.0.1")
    print("=" * 100)


if __name__ == "__main__":
    sys.exit(main())
