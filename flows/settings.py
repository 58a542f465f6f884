"""The embedded default's locations and environment, derived from `M3_HOME` (default `./.m3`).

Called by every flow entry point before Prefect or MLflow is touched: Prefect keeps its home (ephemeral API
database, persisted task results) and MLflow its SQLite store + artifacts under the platform home, unless the
environment already points them elsewhere (a Prefect server, an MLflow server in docker/compose.yaml).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from m3core.paths import m3_home, warehouse_path

ENV_TABLE = Path(__file__).with_name("environment.env")
_ENV_LINE = re.compile(r"([A-Z_][A-Z0-9_]*) \?= (.*)")
_ENV_SCOPE = re.compile(r"# \[(platform|hermetic)\].*")


def env_defaults(*scopes: str, table: Path = ENV_TABLE) -> dict[str, str]:
    """The defaults of `scopes` from the one table of environment defaults (`flows/environment.env`, which the
    Makefile includes): `platform` (always applied, by every flow too) and `hermetic` (the Makefile and the tests
    only: offline Hugging Face Hub).

    >>> sorted(env_defaults("hermetic"))
    ['HF_DATASETS_OFFLINE', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE']
    """
    unknown = set(scopes) - {"platform", "hermetic"}
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}; the table has 'platform' and 'hermetic'")
    defaults: dict[str, str] = {}
    scope = None
    for n, line in enumerate(table.read_text().splitlines(), 1):
        if header := _ENV_SCOPE.fullmatch(line):
            scope = header[1]
        elif entry := _ENV_LINE.fullmatch(line):
            if scope is None:
                raise ValueError(f"{table}:{n}: {entry[1]} comes before any `# [scope]` header")
            if scope in scopes:
                defaults[entry[1]] = entry[2].strip()
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"{table}:{n}: not a `KEY ?= value` line: {line!r}")
    return defaults


ENV_DEFAULTS = env_defaults("platform")  # what configure_environment applies (never the hermetic ones)


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


def fingerprint(*paths: str | Path, exclude: tuple[str, ...] = ()) -> str:
    """Content digest of files/directories (names, sizes, bytes of files < 64 MiB): a cache-key input.

    `exclude`: file names (relative to a directory argument) left out.
    """
    h = hashlib.sha256()
    for p in map(Path, paths):
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            if p.is_dir() and str(f.relative_to(p)) in exclude:
                continue
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            size = f.stat().st_size
            h.update(str(size).encode())
            if size < 64 << 20:
                h.update(f.read_bytes())
    return h.hexdigest()[:20]


def encoder_fingerprint(model_dir: str | Path) -> str:
    """What a model's embeddings depend on: its weights, tokenizer and profile, not its hybrid weights or card.

    Choosing the hybrid weights on the dev split rewrites `m3_config.json`; the embeddings computed for it (and
    cached on disk) stay valid for the held-out evaluation that follows.
    """
    from m3core.config import CONFIG_NAME, M3Config

    h = hashlib.sha256(fingerprint(model_dir, exclude=(CONFIG_NAME, "README.md")).encode())
    config = M3Config.load(model_dir)
    if config is not None:
        config.hybrid_weights = None
        h.update(repr(sorted(vars(config).items())).encode())
    return h.hexdigest()[:20]


def cache_dir(name: str) -> Path:
    """A cache directory under the platform home (e.g. corpus embeddings shared by evaluations of a run)."""
    path = m3_home() / "cache" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


__all__ = [
    "cache_dir",
    "configure_environment",
    "encoder_fingerprint",
    "env_defaults",
    "fingerprint",
    "mlflow_experiment",
    "run_dir",
    "warehouse_path",
]


def dask_task_runner(address: str | None, workers: int):
    """The Dask task runner of the scale-out flows: the cluster at `address` (e.g. `tcp://scheduler:8786`), or a
    local one of `workers` single-threaded worker processes."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
