"""Where training metrics go: a small callback interface (MLflow is one implementation, in `registry/`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class TrainerCallback:
    """Hooks called on rank 0. Override what you need; every method is a no-op here."""

    def on_train_begin(self, config: Any) -> None:
        pass

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_save(self, step: int, path: Path) -> None:
        pass

    def on_train_end(self, summary: dict[str, Any]) -> None:
        pass


class JsonlLogger(TrainerCallback):
    """Appends every logged metrics dict to `<output_dir>/train_log.jsonl` (always on)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")


def callbacks_for(report_to: list[str]) -> list[TrainerCallback]:
    """Reporters named in the config, imported only when asked for (m3core does not need mlflow)."""
    out: list[TrainerCallback] = []
    for name in report_to:
        if name == "mlflow":
            from registry.mlflow_callback import MLflowCallback

            out.append(MLflowCallback())
        else:
            raise ValueError(f"unknown report_to {name!r}: expected 'mlflow'")
    return out
