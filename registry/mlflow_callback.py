"""Training metrics to MLflow: the `TrainerCallback` that `report_to: [mlflow]` selects.

Uses the active MLflow run if there is one (e.g. a flow opened it), otherwise starts one and ends it with the
training. Every loss part (dense, sparse, colbert, ensemble, self_distill, loss) is a metric per logging step;
the config is logged as parameters and as an artifact.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import mlflow

from m3core.train.callbacks import TrainerCallback

logger = logging.getLogger(__name__)


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
        out[prefix] = text[:6000]  # MLflow's parameter value limit


class MLflowCallback(TrainerCallback):
    def __init__(self, experiment: str | None = None, run_name: str | None = None):
        self.experiment, self.run_name = experiment, run_name
        self._started = False

    def on_train_begin(self, config) -> None:
        if mlflow.active_run() is None:
            if self.experiment:
                mlflow.set_experiment(self.experiment)
            mlflow.start_run(run_name=self.run_name)
            self._started = True
        params: dict[str, str] = {}
        _flatten("", config.model_dump(mode="json"), params)
        mlflow.log_params({f"train.{k}": v for k, v in params.items()})

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics({f"train/{k}": float(v) for k, v in metrics.items()}, step=step)

    def on_save(self, step: int, path: Path) -> None:
        mlflow.set_tag("last_checkpoint", str(path))

    def on_train_end(self, summary: dict[str, Any]) -> None:
        mlflow.log_dict(summary, "train_summary.json")
        mlflow.log_metrics(
            {f"train_summary/{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))}
        )
        if self._started:
            mlflow.end_run()
            self._started = False
