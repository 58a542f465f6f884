"""Retrieval over M3 embeddings: faiss dense index, sparse inverted index, ColBERT re-scoring, hybrid."""

from m3core.modes import MODES, outputs_for
from m3core.retrieval.corpus import Embeddings, encode_texts
from m3core.retrieval.dense import DenseIndex, DenseIndexConfig
from m3core.retrieval.hybrid import PRESETS, resolve_weights
from m3core.retrieval.retriever import Retriever, RetrieverConfig
from m3core.retrieval.sparse import SparseIndex

__all__ = [
    "MODES",
    "PRESETS",
    "DenseIndex",
    "DenseIndexConfig",
    "Embeddings",
    "Retriever",
    "RetrieverConfig",
    "SparseIndex",
    "encode_texts",
    "outputs_for",
    "resolve_weights",
]
