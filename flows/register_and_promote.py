"""Flow `register_and_promote`: a new model version with tags, alias `challenger`, `champion` by policy."""

from __future__ import annotations

import os

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact

from flows.params import RegisterParams
from flows.settings import configure_environment, mlflow_experiment


@task(retries=2, retry_delay_seconds=[10, 60])  # the tracking server may be briefly unavailable
def register(
    checkpoint: str,
    eval_report: dict,
    eval_set_id: str,
    params: RegisterParams,
    base_report: dict | None,
    train_config: dict,
    data_snapshot: str,
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
        train_config=train_config,
        data_snapshot=data_snapshot,
    )
    get_run_logger().info("registered %s v%s: %s", r.name, r.version, r.decision.reason)
    return {
        "name": r.name,
        "version": r.version,
        "model_uri": r.model_uri,
        "run_id": r.run_id,
        "promoted": r.decision.promote,
        "reason": r.decision.reason,
    }


@flow(name="register_and_promote", log_prints=True)
def register_and_promote_flow(
    checkpoint: str,
    eval_report: dict,
    eval_set_id: str,
    params: RegisterParams | None = None,
    base_report: dict | None = None,
    train_config: dict | None = None,
    data_snapshot: str = "",
) -> dict:
    configure_environment()
    mlflow_experiment()
    result = register(
        checkpoint,
        eval_report,
        eval_set_id,
        params or RegisterParams(),
        base_report,
        train_config or {},
        data_snapshot,
    )
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
