"""Recall of an approximate dense index against the exact one: how much of the flat top-k it finds.

An approximate index (HNSW, IVF, IVF-PQ) is only worth its speed if it returns nearly the passages the exact
(flat) index would; for hard-negative mining the relevant depth is the rank window (top 100–200), far deeper
than the top 10 ANN libraries usually tune for, and a miss there changes which negatives are sampled.

Recall counts ties, as ann-benchmarks does: a found passage is a hit when its exact score reaches the exact k-th
score (less ``TIE_TOL``). Real pools hold passages with identical vectors (long texts cut to the same first
tokens: 184 of one 20k-passage pool), and which of a tied group the flat index puts at rank k is arbitrary (its
lowest ids); counting ids alone would score an index that returns other members of the group as missing them.
`recall_at_k` is that count; `index_recall` searches an index and the exact ranking (faiss's brute force,
`exact_top_k`: the flat index's ranking, without a second copy of the vectors) with the same queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m3core.retrieval.dense import DenseIndex, DenseIndexConfig

# Exact scores this close to the k-th count as tied with it: above float32 rounding of a 1024-d inner product
# (~1e-6), below the score gaps of real rankings at rank 100 (median 9e-5 on mined data).
TIE_TOL = 1e-5


@dataclass
class RecallReport:
    """Recall@``k`` of an index of ``kind`` against the exact top-``k`` over ``n_queries`` queries and
    ``n_docs`` passages: the mean over queries, and the worst query's."""

    kind: str
    k: int
    n_queries: int
    n_docs: int
    recall: float
    min_recall: float


def recall_at_k(found_scores: np.ndarray, kth_scores: np.ndarray, n_relevant: int) -> np.ndarray:
    """Per query, the share of the exact top-``n_relevant`` an index found: how many of its results
    (``found_scores[nq, k]``: their *exact* scores, -inf for an empty slot) score at least the exact k-th
    score ``kth_scores[nq]`` (less `TIE_TOL`), out of ``n_relevant`` (k, or the corpus size when smaller).

    >>> found = np.array([[0.9, 0.8, 0.1], [0.9, 0.7, 0.7]], dtype=np.float32)
    >>> recall_at_k(found, np.array([0.7, 0.7]), 3).round(3).tolist()  # row 2: a tie at the k-th score counts
    [0.667, 1.0]
    """
    if n_relevant < 1:
        raise ValueError(f"n_relevant must be >= 1, got {n_relevant}")
    if len(found_scores) != len(kth_scores):
        raise ValueError(f"found_scores has {len(found_scores)} queries, kth_scores {len(kth_scores)}")
    hits = (np.asarray(found_scores) >= np.asarray(kth_scores)[:, None] - TIE_TOL).sum(axis=1)
    return np.minimum(hits, n_relevant) / n_relevant


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact inner-product top-``k`` ``(scores, ids)`` ``[nq, min(k, n)]``, as the flat index ranks them, by
    faiss's brute-force search over ``vectors`` in place (no index, so no second copy of them)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores, ids = faiss.knn(queries, vectors, min(k, len(vectors)), metric=faiss.METRIC_INNER_PRODUCT)
    return scores, ids.astype(np.int64)


def exact_scores(vectors: np.ndarray, queries: np.ndarray, ids: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The exact inner products ``[nq, k]`` of each query with the passages ``ids[nq, k]`` (-1: -inf), in
    chunks of queries (bounded memory)."""
    out = np.full(ids.shape, -np.inf, dtype=np.float32)
    for a in range(0, len(ids), chunk):
        block = ids[a : a + chunk]
        vecs = vectors[np.maximum(block, 0)]  # [c, k, d]
        s = np.einsum("cd,ckd->ck", queries[a : a + chunk], vecs)
        out[a : a + chunk] = np.where(block >= 0, s, -np.inf)
    return out


def index_recall(
    vectors: np.ndarray,
    queries: np.ndarray,
    index: DenseIndex | DenseIndexConfig,
    k: int = 100,
    n_queries: int | None = None,
    seed: int = 0,
) -> RecallReport:
    """Recall@``k`` of ``index`` (built over ``vectors[n, d]``, or the config to build it from) for ``queries``
    (``n_queries`` of them drawn with ``seed``; None: all) against the exact top-``k`` over the same vectors,
    ties counted (`recall_at_k`).

    Mining measures its approximate index this way on a sample of its own queries; the bench on all of them.
    """
    if isinstance(index, DenseIndexConfig):
        index = DenseIndex.build(vectors, index)
    if index.n_docs != len(vectors):
        raise ValueError(f"the index holds {index.n_docs} vectors, but {len(vectors)} were given")
    queries = np.asarray(queries, dtype=np.float32)
    if n_queries is not None and n_queries < len(queries):
        queries = queries[np.sort(np.random.default_rng(seed).choice(len(queries), n_queries, replace=False))]
    kth, _ = exact_top_k(vectors, queries, k)
    _, found = index.search(queries, k)
    per_query = recall_at_k(exact_scores(vectors, queries, found), kth[:, -1], kth.shape[1])
    return RecallReport(
        kind=index.config.kind,
        k=k,
        n_queries=len(queries),
        n_docs=len(vectors),
        recall=float(per_query.mean()),
        min_recall=float(per_query.min()),
    )
