"""Shared fixtures. Everything is offline: the tiny model is built from generated text once per session."""

from __future__ import annotations

import os

# Before any library import: no hub, no telemetry, a patient ephemeral Prefect server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import textgen


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved random-init XLM-R-shaped M3 model (hidden 64, 2 layers, 512 positions) with a trained tokenizer."""
    from m3core import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), textgen.sentences(600), vocab_size=1000)


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model_dir):
    from m3core import M3Embedder

    return M3Embedder(str(tiny_model_dir), batch_size=8, show_progress=False)
