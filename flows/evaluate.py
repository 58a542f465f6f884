"""Flow `evaluate`: every retrieval mode per language next to BM25; the table and plot become Prefect artifacts."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from flows.params import EvalParams
from flows.settings import configure_environment, fingerprint


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def evaluate_model(
    model: str, model_fingerprint: str, eval_dir: str, eval_fingerprint: str, params: EvalParams, out_dir: str
) -> dict:
    """The evaluation report (dict) of `model` on the BEIR sets under `eval_dir`; files written to `out_dir`."""
    from m3core import M3Embedder
    from m3core.evaluation import EvalConfig, evaluate, load_eval_sets, write_report

    sets = load_eval_sets(eval_dir)
    if params.languages:
        sets = [
            s
            for s in sets
            if s.meta.get("lang") in params.languages or s.meta.get("query_lang") in params.languages
        ]
    if not sets:
        raise ValueError(f"no eval sets under {eval_dir} for languages {params.languages or 'any'}")
    report = evaluate(
        M3Embedder(model, show_progress=False),
        sets,
        EvalConfig(modes=tuple(params.modes)),
        model_id=model_fingerprint,
    )
    write_report(report, out_dir)
    return report


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    model: str,
    eval_dir: str,
    out_dir: str,
    params: EvalParams | None = None,
    artifact_key: str = "eval-table",
) -> dict:
    from m3core.evaluation import markdown_table

    configure_environment()
    params = params or EvalParams()
    report = evaluate_model(model, fingerprint(model), eval_dir, fingerprint(eval_dir), params, out_dir)
    table = markdown_table(report)
    get_run_logger().info("nDCG@10 ×100\n%s", table)
    create_markdown_artifact(markdown=f"### {model}\n\nnDCG@10 ×100\n\n{table}", key=artifact_key)
    return report
