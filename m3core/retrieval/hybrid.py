"""Hybrid retrieval: the union of dense and sparse candidates, re-scored with a weighted sum of modes.

score = w_dense·s_dense + w_sparse·s_lex + w_colbert·s_mul (M3 paper, Eq. 1), computed by
`m3core.scoring.hybrid_scores` from the per-mode scores of each candidate. The paper's weights
(`m3core.modes.HYBRID_PRESETS`, here also `PRESETS`): short passages (MIRACL-like) 1 / 0.3 / 1, long documents
(MLDR-like) 0.15 / 0.5 / 0.35.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from m3core.modes import HYBRID_PRESETS, OUTPUTS, Weights
from m3core.retrieval.colbert import single_threaded_blas
from m3core.retrieval.corpus import Embeddings
from m3core.retrieval.topk import top_k_rows

# The presets are defined once, in `m3core.modes`; `PRESETS` is that dict under its old name.
PRESETS = HYBRID_PRESETS


def resolve_weights(weights: str | Sequence[float]) -> Weights:
    """A preset name ("short", "long") or three numbers -> (w_dense, w_sparse, w_colbert).

    >>> resolve_weights("long")
    (0.15, 0.5, 0.35)
    >>> resolve_weights("1,0.3,0")
    (1.0, 0.3, 0.0)
    """
    if isinstance(weights, str):
        if weights in HYBRID_PRESETS:
            return HYBRID_PRESETS[weights]
        parts = weights.split(",")
    else:
        parts = list(weights)
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or any(v < 0 for v in values):
        raise ValueError(
            f"weights {weights!r}: expected a preset ({', '.join(HYBRID_PRESETS)}) or three non-negative numbers "
            "w_dense,w_sparse,w_colbert"
        )
    return values  # type: ignore[return-value]


def model_weights(embedder: object, override: str | Sequence[float] | None = None) -> Weights:
    """The hybrid weights to use with `embedder`'s model: `override` when given, else the model's profile
    (`hybrid_weights` in its m3_config.json, chosen on a dev split after training), else the `short` preset."""
    if override is not None:
        return resolve_weights(override)
    # `M3Embedder.config` is the profile with either backend (with ONNX, `embedder.model` is None).
    config = getattr(embedder, "config", None) or getattr(getattr(embedder, "model", None), "config", None)
    saved = getattr(config, "hybrid_weights", None)
    return resolve_weights(tuple(saved) if saved else "short")


def union_candidates(*id_arrays: np.ndarray) -> list[np.ndarray]:
    """Per query, the sorted union of the doc ids in each ``[nq, k]`` array (-1 slots dropped)."""
    nq = id_arrays[0].shape[0]
    out = []
    for i in range(nq):
        ids = np.concatenate([a[i] for a in id_arrays])
        out.append(np.unique(ids[ids >= 0]))
    return out


@dataclass
class ModeScores:
    """Per-mode scores of one query's candidates (each an array aligned with ``ids``; None = not computed)."""

    ids: np.ndarray
    dense: np.ndarray | None
    sparse: np.ndarray | None
    colbert: np.ndarray | None


def mode_scores(
    queries: Embeddings, corpus: Embeddings, qi: int, ids: np.ndarray, outputs: Sequence[str]
) -> ModeScores:
    """Score query ``qi`` against the corpus passages ``ids`` in each requested mode."""
    from m3core import scoring

    ids = np.asarray(ids, dtype=np.int64)
    dense = sparse = colbert = None
    if "dense" in outputs:
        dense = np.asarray(scoring.dense_scores(queries.dense[qi : qi + 1], corpus.dense[ids]), np.float32)[0]
    if "sparse" in outputs:
        qw = queries.lexical[qi]
        sparse = np.array([scoring.lexical_score(qw, corpus.lexical[d]) for d in ids], dtype=np.float32)
    if "colbert" in outputs:
        qv = queries.colbert[qi]
        with single_threaded_blas():
            colbert = np.array([scoring.colbert_score(qv, corpus.colbert[d]) for d in ids], dtype=np.float32)
    return ModeScores(ids, dense, sparse, colbert)


def hybrid_rescore(
    queries: Embeddings, corpus: Embeddings, candidates: Sequence[np.ndarray], weights: Weights, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score each query's ``candidates`` with the weighted sum of modes; top ``k`` as (scores, ids).

    Modes with weight 0 are not computed (their embeddings may be absent).
    """
    from m3core.scoring import hybrid_scores

    needed = [n for n, w in zip(OUTPUTS, weights, strict=True) if w != 0]
    queries.require(*needed)
    corpus.require(*needed)
    out_s = np.full((len(candidates), k), -np.inf, dtype=np.float32)
    out_i = np.full((len(candidates), k), -1, dtype=np.int64)
    for qi, ids in enumerate(candidates):
        if len(ids) == 0:
            continue
        ms = mode_scores(queries, corpus, qi, ids, needed)
        zeros = np.zeros(len(ids), dtype=np.float32)
        parts = [zeros if p is None else p for p in (ms.dense, ms.sparse, ms.colbert)]
        total = np.asarray(hybrid_scores(*parts, weights=weights), dtype=np.float32)
        s, i = top_k_rows(total[None, :], k, ids=ids[None, :])
        out_s[qi, : s.shape[1]], out_i[qi, : s.shape[1]] = s[0], i[0]
    return out_s, out_i
