"""Registry aliases → checkpoint directories: the one place that knows where the checkpoint sits in a model.

Negative mining (the interim model) and promotion (re-evaluating the champion) both need the plain M3
checkpoint directory of `models:/<name>@<alias>`; the pyfunc keeps it as its artifact `checkpoint`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint"  # the artifact key of registry.log_model.log_m3_model
ONNX_ARTIFACT = "onnx"  # its ONNX export (m3core.onnx_export), what the pyfunc serves from on CPU


def version_for_alias(name: str, alias: str, client: MlflowClient | None = None) -> ModelVersion | None:
    """The model version `name@alias`, or None when the model or the alias does not exist."""
    try:
        return (client or MlflowClient()).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def find_checkpoint(model_dir: str | Path) -> Path:
    """The checkpoint directory inside a downloaded pyfunc model: where its `MLmodel` says the artifact is."""
    from mlflow.models import Model

    root = Path(model_dir)
    if (root / "MLmodel").is_file():
        artifacts = Model.load(root).flavors.get("python_function", {}).get("artifacts", {})
        if CHECKPOINT_ARTIFACT in artifacts:
            return root / artifacts[CHECKPOINT_ARTIFACT]["path"]
    # A hand-made layout without the pyfunc's artifact record: the directory that holds the M3 heads.
    found = sorted(p.parent for p in root.rglob("colbert_linear.pt"))
    if not found:
        raise FileNotFoundError(
            f"{root}: no M3 checkpoint in this model (no {CHECKPOINT_ARTIFACT!r} artifact)"
        )
    return found[0]


def checkpoint_for_version(name: str, version: str, dst: str | Path | None = None) -> Path:
    """Download `models:/<name>/<version>` and return its checkpoint directory.

    `dst` (optional) makes the location stable, which keeps Prefect's input-keyed caches of later steps hot.
    """
    if dst is not None:
        Path(dst).mkdir(parents=True, exist_ok=True)
    path = mlflow.artifacts.download_artifacts(
        f"models:/{name}/{version}", dst_path=None if dst is None else str(dst)
    )
    return find_checkpoint(path)


def checkpoint_for_alias(name: str, alias: str, dst: str | Path | None = None) -> Path | None:
    """Download `models:/<name>@<alias>` and return its checkpoint directory; None when there is no such alias.

    The alias is resolved to a version first and that version downloaded, so an alias moved meanwhile cannot
    mix two versions' files.
    """
    mv = version_for_alias(name, alias)
    if mv is None:
        logger.info("no %s@%s in the registry", name, alias)
        return None
    checkpoint = checkpoint_for_version(name, str(mv.version), dst)
    logger.info("%s@%s is version %s: checkpoint %s", name, alias, mv.version, checkpoint)
    return checkpoint


def model_for_alias(name: str, alias: str | None, fallback: str, dst: str | Path | None = None) -> str:
    """The checkpoint directory of `models:/<name>@<alias>`, or `fallback` when `alias` is None/empty or the
    registry has no such alias (e.g. the interim model for negative mining: the champion, else the base)."""
    if not alias:
        return fallback
    checkpoint = checkpoint_for_alias(name, alias, dst)
    if checkpoint is None:
        logger.info("no %s@%s in the registry: using %s", name, alias, fallback)
        return fallback
    return str(checkpoint)
