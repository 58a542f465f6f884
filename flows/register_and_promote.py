"""Flow `register_and_promote`: a new model version with tags and card, alias `challenger`, `champion` by policy.

The candidate is compared with the champion on the candidate's eval set. Eval sets change (a new export adds
queries, a language, a set), and a champion measured on another set is not comparable; so when the champion
has no score on this set yet, the flow downloads it, evaluates it here with the same cached `evaluate_model`
task the candidate went through, and records the result on the champion's version (tags keyed by eval set id:
the next run on this set reads them instead of evaluating again). Then it decides on equal terms.

The MLflow tasks retry transient faults (`RegisterParams.retries`); a registration a retry or a rerun picks up
again is finished, not duplicated (`registry.register`). When the tracking server stays away, the flow fails
with `RegistrationFailed`, whose message names the checkpoint (kept) and the command that registers it later.
"""

from __future__ import annotations

import os

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows.evaluate import evaluate_model
from flows.params import EvalParams, RegisterParams
from flows.retries import transient
from flows.settings import configure_environment, fingerprint, mlflow_experiment
from m3core.paths import m3_home


class RegistrationFailed(RuntimeError):
    """Registration did not happen (the tracking server stayed away, say); the message says how to retry it."""


@task(retry_condition_fn=transient)  # retries: RegisterParams (MLflow may be down)
def champion_to_reevaluate(model_name: str, metric: str, eval_set_id: str) -> dict | None:
    """`{"version", "checkpoint"}` of the champion when it has no `metric` on this eval set yet, else None.

    Downloaded by version (the one whose tags were read) to a stable place under the platform home, so the
    evaluation task's input-keyed cache hits on a rerun.
    """
    from registry.aliases import checkpoint_for_version
    from registry.register import find_champion

    log = get_run_logger()
    champion = find_champion(model_name, metric, eval_set_id)
    if champion is None:
        log.info("no champion of %s yet", model_name)
        return None
    if champion.comparable_on(eval_set_id):
        log.info("champion v%s has %s %.4f on this eval set", champion.version, metric, champion.value)
        return None
    log.info(
        "champion v%s was evaluated on eval set %s, not %s: re-evaluating it",
        champion.version,
        champion.eval_set_id,
        eval_set_id,
    )
    dst = m3_home() / "champions" / f"{model_name}-v{champion.version}"
    checkpoint = checkpoint_for_version(model_name, champion.version, dst / "model")
    return {"version": champion.version, "checkpoint": str(checkpoint), "out_dir": str(dst / "eval")}


@task(retry_condition_fn=transient)
def record_champion_evaluation(
    model_name: str, version: str, report: dict, eval_set_id: str, metric: str
) -> None:
    from registry.register import record_evaluation

    record_evaluation(model_name, version, report, eval_set_id, metric)


@task(retry_condition_fn=transient)
def register(
    checkpoint: str,
    eval_report: dict,
    eval_set_id: str,
    params: RegisterParams,
    base_report: dict | None,
    base_model: str | None,
    train_config: dict,
    data_snapshot: str,
    run_params: dict | None,
) -> dict:
    from registry.promotion import PromotionPolicy
    from registry.register import register_and_promote

    r = register_and_promote(
        checkpoint,
        params.model_name,
        eval_report,
        eval_set_id,
        policy=PromotionPolicy(params.metric, params.min_improvement),
        base_report=base_report,
        base_model=base_model,
        train_config=train_config,
        data_snapshot=data_snapshot,
        run_params=run_params,
        onnx=params.onnx,
    )
    get_run_logger().info("registered %s v%s: %s", r.name, r.version, r.decision.reason)
    return {
        "name": r.name,
        "version": r.version,
        "model_uri": r.model_uri,
        "run_id": r.run_id,
        "promoted": r.decision.promote,
        "reason": r.decision.reason,
        "eval_set_id": eval_set_id,
        "candidate_value": r.candidate_value,
        "champion_version": None if r.champion is None else r.champion.version,
        "champion_value": None if r.champion is None else r.champion.value,
        "base_reference": None if r.base is None else {"mode": r.base.mode, "value": r.base.value},
    }


def retry_delays(params: RegisterParams) -> list[float]:
    """One wait per retry: the configured ones, the last repeated."""
    delays = params.retry_delay_seconds or [0.0]
    return [delays[min(i, len(delays) - 1)] for i in range(params.retries)]


@flow(name="register_and_promote", log_prints=True)
def register_and_promote_flow(
    checkpoint: str,
    eval_report: dict,
    eval_dir: str,
    params: RegisterParams | None = None,
    base_report: dict | None = None,
    base_model: str | None = None,
    eval_params: EvalParams | None = None,
    train_config: dict | None = None,
    data_snapshot: str = "",
    run_params: dict | None = None,
) -> dict:
    """Register `checkpoint` (evaluated as `eval_report` on the sets under `eval_dir`) and apply the policy.

    `eval_params` must be those the candidate was evaluated with: the champion is re-evaluated with them.
    `base_model` (its directory or Hub id) tells whether the base has trained heads (see registry.promotion).
    """
    from m3core.evaluation import markdown_table, write_report

    configure_environment()
    mlflow_experiment()
    params = params or RegisterParams()
    eval_params = eval_params or EvalParams()
    eval_set_id = fingerprint(eval_dir)
    retrying = {"retries": params.retries, "retry_delay_seconds": retry_delays(params)}
    stale = champion_to_reevaluate.with_options(**retrying)(params.model_name, params.metric, eval_set_id)
    if stale is not None:
        report = evaluate_model(
            stale["checkpoint"],
            fingerprint(stale["checkpoint"]),
            eval_dir,
            eval_set_id,
            eval_params,
            stale["out_dir"],
        )
        write_report(report, stale["out_dir"])
        record_champion_evaluation.with_options(**retrying)(
            params.model_name, stale["version"], report, eval_set_id, params.metric
        )
        create_markdown_artifact(
            markdown=f"### champion v{stale['version']} on eval set {eval_set_id}\n\nnDCG@10 ×100\n\n"
            + markdown_table(report),
            key="eval-champion",
        )
    result = register.with_options(**retrying)(
        checkpoint,
        eval_report,
        eval_set_id,
        params,
        base_report,
        base_model,
        train_config or {},
        data_snapshot,
        run_params,
    )
    result["champion_reevaluated"] = stale is not None
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith("http"):
        create_link_artifact(
            link=f"{uri.rstrip('/')}/#/models/{result['name']}/versions/{result['version']}",
            key="mlflow-model-version",
        )
    else:
        create_link_artifact(
            link=f"models:/{result['name']}/{result['version']}",
            link_text=f"MLflow ({uri})",
            key="mlflow-model-version",
        )
    return result
