"""Flow `evaluate`: every retrieval mode per language next to BM25; the table and plot become Prefect artifacts.

Also `choose_weights`: the hybrid weights a trained model is served with, chosen on the dev split and saved in
its profile before the held-out evaluation reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from flows.params import EvalParams
from flows.settings import cache_dir, configure_environment, encoder_fingerprint, fingerprint


def eval_config(params: EvalParams, modes: list[str] | None = None, cache: str | None = None):
    from m3core.evaluation import EvalConfig

    return EvalConfig(
        modes=tuple(params.modes if modes is None else modes),
        batch_size=params.batch_size,
        query_max_length=params.query_max_length,
        passage_max_length=params.passage_max_length,
        cache_dir=Path(cache) if cache else None,
        weights=None if params.weights == "model" else params.weights,
        mcls=params.mcls,
    )


def _embedder(model: str, params: EvalParams):
    from m3core import M3Embedder

    return M3Embedder(model, show_progress=False, batch_size=params.batch_size)


# Keyed by the model's and the eval sets' content fingerprints and the parameters, not by paths: each retrain
# exports its eval sets into its own run directory, and a scheduled retrain re-scores an unchanged base model
# (or champion) from the cache; the caller writes the report files into its run's directory.
@task(cache_policy=(INPUTS - "out_dir" - "eval_dir") + TASK_SOURCE, persist_result=True)
def evaluate_model(
    model: str,
    model_fingerprint: str,
    eval_dir: str,
    eval_fingerprint: str,
    params: EvalParams,
    out_dir: str,
    modes: list[str] | None = None,
) -> dict:
    """The evaluation report (dict) of `model` on the BEIR sets under `eval_dir`. `out_dir` is where the caller
    writes its files (`write_report`): not part of the cache key."""
    from m3core.evaluation import evaluate, load_eval_sets

    failures: list[dict[str, str]] = []  # a bad set is reported in the report; the others are evaluated
    sets = load_eval_sets(eval_dir, failures=failures)
    if params.languages:
        sets = [
            s
            for s in sets
            if s.meta.get("lang") in params.languages or s.meta.get("query_lang") in params.languages
        ]
    if not sets and not failures:
        raise ValueError(f"no eval sets under {eval_dir} for languages {params.languages or 'any'}")
    config = eval_config(params, modes, cache=str(cache_dir("embeddings")))
    model_id = encoder_fingerprint(model)
    return evaluate(_embedder(model, params), sets, config, model_id=model_id, failures=failures)


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    model: str,
    eval_dir: str,
    out_dir: str,
    params: EvalParams | None = None,
    artifact_key: str = "eval-table",
    modes: list[str] | None = None,
) -> dict:
    """`modes`: None for `params.modes` (e.g. `["dense"]` for a plain backbone whose heads are untrained)."""
    from m3core.evaluation import markdown_table, write_report

    configure_environment()
    params = params or EvalParams()
    report = evaluate_model(
        model, fingerprint(model), eval_dir, fingerprint(eval_dir), params, out_dir, modes
    )
    write_report(report, out_dir)
    table = markdown_table(report)
    get_run_logger().info("nDCG@10 ×100\n%s", table)
    weights = report.get("hybrid_weights")
    create_markdown_artifact(
        markdown=f"### {model}\n\nnDCG@10 ×100; hybrid weights (dense, sparse, colbert) {weights}\n\n{table}",
        key=artifact_key,
    )
    return report


@task
def choose_weights(model: str, dev_dir: str, params: EvalParams) -> dict:
    """Choose the hybrid weights on the dev sets and save them in the model's profile (`m3_config.json`)."""
    from m3core.evaluation import load_eval_sets
    from m3core.evaluation.weights import save_weights

    choice = save_weights(
        model,
        _embedder(model, params),
        load_eval_sets(dev_dir),
        eval_config(params, cache=str(cache_dir("embeddings"))),
        model_id=encoder_fingerprint(model),
    )
    return choice.to_json()


@flow(name="choose_weights", log_prints=True)
def choose_weights_flow(model: str, dev_dir: str, params: EvalParams | None = None) -> dict:
    configure_environment()
    result = choose_weights(model, dev_dir, params or EvalParams())
    get_run_logger().info("hybrid weights: %s", json.dumps(result))
    create_markdown_artifact(
        markdown=(
            f"### hybrid weights of {model}\n\nchosen {result['weights']} (dense, sparse, colbert): dev nDCG@10 "
            f"{100 * result['dev_ndcg@10']:.1f} vs the paper's 1/0.3/1 {100 * result['dev_ndcg@10_paper_short']:.1f}"
            f" over {result['n_sets']} dev sets, {result['n_queries']} queries"
        ),
        key="hybrid-weights",
    )
    return result
