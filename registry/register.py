"""Register a trained checkpoint as a new model version, alias it `challenger`, and apply the promotion policy.

Tags on every version: data snapshot, config hash, code version, eval set id and metrics; the promotion
decision and its reason. Aliases only (MLflow stages are deprecated).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from registry.promotion import Decision, PromotionPolicy, decide, metric_value
from registry.pyfunc import log_m3_model

logger = logging.getLogger(__name__)

CHALLENGER, CHAMPION = "challenger", "champion"


@dataclass
class Registration:
    name: str
    version: str
    model_uri: str
    run_id: str
    decision: Decision


def code_version() -> str:
    """The git commit of this checkout (with `-dirty` for uncommitted changes), or `unknown`."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def tag_key(name: str) -> str:
    """A valid MLflow tag key: `eval.average.dense+sparse.ndcg@10` → `eval.average.dense_plus_sparse.ndcg_at_10`."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_").replace("+", "_plus_"))


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _champion(client: MlflowClient, name: str, metric: str) -> tuple[float, str] | None:
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    tags = mv.tags
    if tag_key(f"eval.{metric}") not in tags:
        logger.warning("champion %s v%s has no eval.%s tag: treating it as absent", name, mv.version, metric)
        return None
    return float(tags[tag_key(f"eval.{metric}")]), tags.get("eval_set_id", "")


def register_and_promote(
    checkpoint: str | Path,
    name: str,
    eval_report: dict[str, Any],
    eval_set_id: str,
    *,
    policy: PromotionPolicy | None = None,
    base_report: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    data_snapshot: str = "",
    description: str = "",
) -> Registration:
    """Log + register `checkpoint`, alias it `challenger`, and move `champion` to it if the policy says so."""
    policy = policy or PromotionPolicy()
    client = MlflowClient()
    candidate = metric_value(eval_report, policy.metric)
    base = metric_value(base_report, policy.metric) if base_report else None
    own_run = mlflow.active_run() is None
    run = mlflow.start_run() if own_run else mlflow.active_run()
    try:
        mlflow.log_dict(eval_report, "eval_report.json")
        if base_report:
            mlflow.log_dict(base_report, "base_eval_report.json")
        info = log_m3_model(checkpoint, registered_model_name=name)
    finally:
        if own_run:
            mlflow.end_run()
    version = str(info.registered_model_version)
    tags = {
        "data_snapshot": data_snapshot,
        "config_hash": config_hash(train_config or {}),
        "code_version": code_version(),
        "eval_set_id": eval_set_id,
        tag_key(f"eval.{policy.metric}"): f"{candidate:.6f}",
        "source_checkpoint": str(checkpoint),
    }
    for mode, values in eval_report.get("average", {}).items():
        for metric, value in values.items():
            tags[tag_key(f"eval.average.{mode}.{metric}")] = f"{float(value):.6f}"
    if base is not None:
        tags[tag_key(f"base.{policy.metric}")] = f"{base:.6f}"
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    decision = decide(policy, candidate, eval_set_id, _champion(client, name, policy.metric), base)
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_model_version_tag(name, version, "promotion", "promoted" if decision.promote else "rejected")
    client.set_model_version_tag(name, version, "promotion_reason", decision.reason)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    text = description or f"M3 model trained from {train_config.get('model') if train_config else 'unknown'}"
    client.update_model_version(name, version, description=f"{text}\n\nPromotion: {decision.reason}")
    logger.info(
        "registered %s v%s (%s): %s",
        name,
        version,
        "champion" if decision.promote else "challenger",
        decision.reason,
    )
    return Registration(name, version, f"models:/{name}/{version}", run.info.run_id, decision)
