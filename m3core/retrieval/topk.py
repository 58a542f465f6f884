"""Top-k selection over score rows with deterministic tie-breaking (higher score, then lower id)."""

from __future__ import annotations

import numpy as np


def top_k_rows(scores: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` entries of each row of ``scores[n, m]``: ``(scores[n, k'], ids[n, k'])``, k' = min(k, m).

    ``ids[n, m]`` names the columns (default: the column index). Entries scored ``-inf`` are returned as
    id -1 so callers can tell padding from hits. Sorting by (-score, id) makes rankings reproducible, so
    two implementations with equal scores return equal lists.

    >>> s, i = top_k_rows(np.array([[0.1, 0.9, 0.9, -np.inf]]), 3)
    >>> i.tolist(), [round(float(x), 2) for x in s[0]]
    ([[1, 2, 0]], [0.9, 0.9, 0.1])
    """
    scores = np.asarray(scores, dtype=np.float32)
    n, m = scores.shape
    if ids is None:
        ids = np.broadcast_to(np.arange(m, dtype=np.int64), (n, m))
    kk = min(k, m)
    if kk == 0:
        return np.empty((n, 0), np.float32), np.empty((n, 0), np.int64)
    if kk < m:
        # argpartition first (O(m)), then an exact sort of the few survivors; the partition threshold is
        # widened to every entry equal to the k-th score so ties are resolved by id, not by partition luck.
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        keep = scores >= kth
        rows = []
        for r in range(n):
            cand = np.flatnonzero(keep[r])
            order = np.lexsort((ids[r, cand], -scores[r, cand]))[:kk]
            rows.append(cand[order])
        cols = np.stack(rows)
    else:
        cols = np.lexsort((ids, -scores), axis=1)
    top_s = np.take_along_axis(scores, cols, axis=1)
    top_i = np.take_along_axis(np.asarray(ids, dtype=np.int64), cols, axis=1).copy()
    top_i[~np.isfinite(top_s)] = -1
    return top_s, top_i
