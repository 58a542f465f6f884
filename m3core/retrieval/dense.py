"""Dense retrieval with faiss: exact inner product by default, HNSW or IVF for large corpora.

M3 dense vectors are L2-normalised, so inner product = cosine. ``flat`` is exact and the right choice up to
a few hundred thousand passages on CPU; ``hnsw`` (graph, no training, best recall/latency) and ``ivf``
(k-means cells, trained on the corpus, smaller memory) trade a little recall for sub-linear search.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "hnsw", "ivf"]


@dataclass
class DenseIndexConfig:
    """Which faiss index to build. ``nlist`` 0 means ~4·sqrt(n) cells (the faiss guideline)."""

    kind: IndexKind = "flat"
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 200
    ivf_nlist: int = 0
    ivf_nprobe: int = 16


class DenseIndex:
    """A faiss inner-product index over dense vectors (row position = doc id).

    >>> index = DenseIndex.build(np.eye(3, dtype=np.float32))
    >>> scores, ids = index.search(np.array([[0.0, 1.0, 0.0]], dtype=np.float32), k=2)
    >>> ids[0].tolist()[0], float(scores[0, 0])
    (1, 1.0)
    """

    def __init__(self, index, config: DenseIndexConfig) -> None:
        self.index = index
        self.config = config

    @property
    def n_docs(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, vectors: np.ndarray, config: DenseIndexConfig | None = None) -> DenseIndex:
        """Build an index over ``vectors[n, d]`` (float32, normalised)."""
        import faiss

        config = config or DenseIndexConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"dense vectors must be a 2-d array [n, d], got shape {vectors.shape}")
        n, d = vectors.shape
        ip = faiss.METRIC_INNER_PRODUCT
        if config.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif config.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, config.hnsw_m, ip)
            index.hnsw.efConstruction = config.hnsw_ef_construction
            index.hnsw.efSearch = config.hnsw_ef_search
        elif config.kind == "ivf":
            nlist = config.ivf_nlist or max(1, int(4 * math.sqrt(n)))
            nlist = min(nlist, max(1, n // 39))  # faiss wants >= 39 training points per cell
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, ip)
            index.train(vectors)
            index.nprobe = min(config.ivf_nprobe, nlist)
        else:
            raise ValueError(f"unknown dense index kind {config.kind!r}: expected flat, hnsw or ivf")
        index.add(vectors)
        log.debug("dense index %s: %d vectors of dim %d", config.kind, n, d)
        return cls(index, config)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query: ``(scores[nq, k] float32, ids[nq, k] int64)``; missing slots are id -1, -inf."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, ids = self.index.search(queries, min(k, self.n_docs))
        scores = scores.astype(np.float32)
        scores[ids < 0] = -np.inf
        if ids.shape[1] < k:  # fewer passages than k: pad like the other retrievers
            pad = k - ids.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores, ids.astype(np.int64)

    def save(self, path: str | Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, config: DenseIndexConfig | None = None) -> DenseIndex:
        import faiss

        return cls(faiss.read_index(str(path)), config or DenseIndexConfig())
