"""The embedded default's locations and environment, derived from `M3_HOME` (default `./.m3`).

Called by every flow entry point before Prefect or MLflow is touched: Prefect keeps its home (ephemeral API
database, persisted task results) and MLflow its SQLite store + artifacts under the platform home, unless the
environment already points them elsewhere (a Prefect server, an MLflow server in docker/compose.yaml).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from m3core.paths import m3_home, warehouse_path

ENV_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # the 20 s default times out on 2 busy cores
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",  # cached task results survive the process: reruns resume
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def configure_environment() -> Path:
    """Set defaults for Prefect/MLflow under the platform home; returns the home."""
    home = m3_home()
    home.mkdir(parents=True, exist_ok=True)
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    return home


def mlflow_experiment(name: str = "m3") -> str:
    """Use (creating if needed) the experiment `name`; with a local store its artifacts go under the home.

    (A SQLite tracking store otherwise puts artifacts in `./mlruns` of whatever directory the process runs in.)
    """
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        remote = os.environ.get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://", "databricks"))
        location = None if remote else (m3_home() / "mlartifacts").as_uri()
        client.create_experiment(name, artifact_location=location)
    os.environ["MLFLOW_EXPERIMENT_NAME"] = name  # subprocesses (torchrun) log there too
    mlflow.set_experiment(name)
    return name


def run_dir(run_name: str) -> Path:
    """Per-retrain working directory (exports, mined negatives, checkpoints, eval reports)."""
    path = m3_home() / "runs" / run_name
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(*paths: str | Path) -> str:
    """Content digest of files/directories (names, sizes, bytes of files < 64 MiB): a cache-key input."""
    h = hashlib.sha256()
    for p in map(Path, paths):
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            size = f.stat().st_size
            h.update(str(size).encode())
            if size < 64 << 20:
                h.update(f.read_bytes())
    return h.hexdigest()[:20]


__all__ = ["configure_environment", "fingerprint", "mlflow_experiment", "run_dir", "warehouse_path"]
