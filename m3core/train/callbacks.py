"""Where training metrics go: a small callback interface, and the reporters that `report_to` names.

A reporter is a `TrainerCallback` class an installed package contributes through the entry-point group
`m3.reporters` (`registry` contributes `mlflow`, see `pyproject.toml`), so the library never imports it.
"""

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


REPORTER_GROUP = "m3.reporters"


def installed_reporters() -> dict:
    """Reporter name → entry point, for every installed package that contributes one."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=REPORTER_GROUP)}


def callbacks_for(report_to: list[str]) -> list[TrainerCallback]:
    """One callback per reporter named in the config, loaded from the `m3.reporters` entry points."""
    available = installed_reporters()
    out: list[TrainerCallback] = []
    for name in report_to:
        if name not in available:
            known = ", ".join(sorted(available)) or "none installed"
            raise ValueError(f"report_to: unknown reporter {name!r} (installed: {known})")
        out.append(available[name].load()())
    return out
