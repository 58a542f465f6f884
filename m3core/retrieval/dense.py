"""Dense retrieval with faiss: exact inner product by default, HNSW, IVF or IVF-PQ for large corpora.

M3 dense vectors are L2-normalised, so inner product = cosine. ``flat`` is exact and the right choice up to
a few hundred thousand passages on CPU; ``hnsw`` (graph, no training, best recall/latency) and ``ivf``
(k-means cells, trained on the corpus, smaller memory) trade a little recall for sub-linear search.
``ivfpq`` keeps product-quantised codes in its k-means cells (``pq_m`` bytes a vector instead of 4·d), scans
``ivf_nprobe`` cells of them and re-ranks the best ``refine_factor``·k candidates with 8-bit scalar-quantised
vectors (``refine``): the PQ scores alone are too coarse for deep rankings (top 100–200, as mining reads), the
re-ranking brings them close to the exact order at about a third of the flat index's memory.

The trained kinds (``ivf``, ``ivfpq``) learn their cells and codebooks from ``train_sample`` rows drawn with
``seed`` (all rows when there are fewer): a bounded cost however large the corpus, and the same index from the
same vectors. faiss adds to an HNSW graph from several threads in an unspecified order, so with more than one
thread two builds over the same vectors can differ slightly (its search is deterministic); the trained kinds
do not.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "hnsw", "ivf", "ivfpq"]
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf", "ivfpq")
RefineKind = Literal["sq8", "fp16", "flat"]


@dataclass
class DenseIndexConfig:
    """Which faiss index to build and how it searches.

    ``ivf_nlist`` 0 means ~4·sqrt(n) cells (the faiss guideline), at most one per 39 training rows.
    ``pq_m`` 0 means the largest divisor of the dimension not above d/8 (48 sub-quantisers of 8 dimensions for
    d = 384: codes of 4 dimensions trained ~10x slower and, re-ranked, found hardly more), ``pq_nbits`` bits
    each. ``refine`` (``ivfpq``): how the re-ranking stores the vectors — ``sq8`` (d bytes), ``fp16`` (2·d) or
    ``flat`` (4·d, exact scores) — or None for the PQ scores alone; it re-ranks ``refine_factor``·k candidates.
    ``train_sample`` 0: train on every row.
    """

    kind: IndexKind = "flat"
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 200
    ivf_nlist: int = 0
    ivf_nprobe: int = 16
    pq_m: int = 0
    pq_nbits: int = 8
    refine: RefineKind | None = "sq8"
    refine_factor: int = 16
    train_sample: int = 0
    seed: int = 0


def default_pq_m(d: int) -> int:
    """The largest divisor of ``d`` not above ``d / 8`` (a byte of code per eight dimensions, or a little more).

    >>> default_pq_m(384), default_pq_m(1024), default_pq_m(30)
    (48, 128, 3)
    """
    return max(m for m in range(1, max(1, d // 8) + 1) if d % m == 0)


def train_rows(vectors: np.ndarray, sample: int, seed: int) -> np.ndarray:
    """The rows a trained index learns from: ``sample`` of them drawn with ``seed`` (in their original order),
    or all of them when ``sample`` is 0 or not smaller than their number."""
    n = len(vectors)
    if sample <= 0 or sample >= n:
        return vectors
    picked = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    return np.ascontiguousarray(vectors[picked])


def _nlist(config: DenseIndexConfig, n: int, n_train: int) -> int:
    nlist = config.ivf_nlist or max(1, int(4 * math.sqrt(n)))
    return max(1, min(nlist, n_train // 39))  # faiss wants >= 39 training points per cell


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
        elif config.kind in ("ivf", "ivfpq"):
            train = train_rows(vectors, config.train_sample, config.seed)
            nlist = _nlist(config, n, len(train))
            if config.kind == "ivf":
                index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, ip)
            else:
                index = cls._ivfpq(faiss, d, nlist, len(train), config)
            index.train(train)
            ivf = faiss.extract_index_ivf(index)
            ivf.nprobe = min(config.ivf_nprobe, nlist)
        else:
            raise ValueError(
                f"unknown dense index kind {config.kind!r}: expected one of {', '.join(INDEX_KINDS)}"
            )
        index.add(vectors)
        log.debug("dense index %s: %d vectors of dim %d", config.kind, n, d)
        return cls(index, config)

    @staticmethod
    def _ivfpq(faiss, d: int, nlist: int, n_train: int, config: DenseIndexConfig):
        """An untrained IVF-PQ index, wrapped in the re-ranking index ``config.refine`` names."""
        m = config.pq_m or default_pq_m(d)
        if d % m:
            raise ValueError(f"pq_m {m} must divide the vector dimension {d}")
        if n_train < 2**config.pq_nbits:
            raise ValueError(
                f"ivfpq: {n_train} training vectors are fewer than the {2**config.pq_nbits} centroids of "
                f"pq_nbits {config.pq_nbits}; use the flat index for so few vectors"
            )
        ip = faiss.METRIC_INNER_PRODUCT
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, config.pq_nbits, ip)
        suggested = 39 * 2**config.pq_nbits
        if n_train < suggested:
            log.info("ivfpq: %d training vectors for %d centroids per sub-quantiser (faiss suggests %d)",
                     n_train, 2**config.pq_nbits, suggested)  # fmt: skip
            index.pq.cp.min_points_per_centroid = 1  # said once here, not by faiss once per sub-quantiser
        if config.refine is None:
            return index
        if config.refine == "flat":
            refined = faiss.IndexRefineFlat(index)
        else:
            qtype = {"sq8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}
            if config.refine not in qtype:
                raise ValueError(f"unknown refine {config.refine!r}: expected sq8, fp16, flat or None")
            refined = faiss.IndexRefine(index, faiss.IndexScalarQuantizer(d, qtype[config.refine], ip))
        refined.k_factor = float(config.refine_factor)
        return refined

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

    def nbytes(self) -> int:
        """The index's size as faiss serialises it (what it holds in memory, to within its small headers)."""
        import faiss

        return int(faiss.serialize_index(self.index).size)

    def save(self, path: str | Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, config: DenseIndexConfig | None = None) -> DenseIndex:
        import faiss

        return cls(faiss.read_index(str(path)), config or DenseIndexConfig())
