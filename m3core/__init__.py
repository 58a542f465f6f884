"""m3core: the M3 embedding library — model, scoring, encoding, training, retrieval, data (no prefect, no mlflow).

The top-level names load lazily, so `import m3core.data.warehouse` (or `m3 mine`) does not pay for torch and
transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "M3Config": "m3core.config",
    "M3Embedder": "m3core.embedder",
    "M3Model": "m3core.model",
    "M3Output": "m3core.model",
    "TinyModelSpec": "m3core.builder",
    "build_tiny_model": "m3core.builder",
}
__all__ = ["M3Config", "M3Embedder", "M3Model", "M3Output", "TinyModelSpec", "build_tiny_model"]

if TYPE_CHECKING:  # pragma: no cover
    from m3core.builder import TinyModelSpec, build_tiny_model
    from m3core.config import M3Config
    from m3core.embedder import M3Embedder
    from m3core.model import M3Model, M3Output


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'm3core' has no attribute {name!r}")
