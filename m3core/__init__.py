"""m3core: the M3 embedding library — model, scoring, encoding, training, retrieval, data (no prefect, no mlflow)."""

from m3core.builder import TinyModelSpec, build_tiny_model
from m3core.config import M3Config
from m3core.embedder import M3Embedder
from m3core.model import M3Model, M3Output

__all__ = ["M3Config", "M3Embedder", "M3Model", "M3Output", "TinyModelSpec", "build_tiny_model"]
