"""Where the embedded default keeps its state: one home directory (env `M3_HOME`, default `./.m3`)."""

from __future__ import annotations

import os
from pathlib import Path


def m3_home() -> Path:
    """The platform home: DuckDB warehouse, MLflow store, Prefect home, checkpoints, LLM cache."""
    return Path(os.environ.get("M3_HOME", ".m3")).expanduser().resolve()


def warehouse_path() -> Path:
    """The DuckDB warehouse file (env `M3_WAREHOUSE` overrides)."""
    explicit = os.environ.get("M3_WAREHOUSE")
    return Path(explicit).expanduser().resolve() if explicit else m3_home() / "warehouse.duckdb"


def models_dir() -> Path:
    return m3_home() / "models"
