"""Shared fixtures. Everything is offline: the tiny model is built from generated text once per session."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.support import textgen


def _settings():
    """flows/settings.py by its path: importing the `flows` package would run configure_environment here."""
    spec = importlib.util.spec_from_file_location(
        "_m3_settings", Path(__file__).parents[1] / "flows" / "settings.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Before torch, transformers, prefect or mlflow is imported: the one table's defaults, the hermetic ones too
# (no hub, no telemetry, a patient ephemeral Prefect server); values already set win.
for _key, _value in _settings().env_defaults("platform", "hermetic").items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved random-init XLM-R-shaped M3 model (hidden 64, 2 layers, 512 positions) with a trained tokenizer."""
    from m3core import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), textgen.sentences(600), vocab_size=1000)


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model_dir):
    from m3core import M3Embedder

    return M3Embedder(str(tiny_model_dir), batch_size=8, show_progress=False)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One temporary Prefect API server for the session (starting one costs ~8 s on 2 cores); each flow test
    module keeps a platform home of its own (`tests.support.procs.platform_home`)."""
    from tests.support.procs import prefect_api

    with prefect_api(tmp_path_factory.mktemp("prefect-server")):
        yield
