"""Relevance scores of the three M3 modes and their hybrid (paper Eq. 1), as pure functions.

Two families with the same formulas:
- inference outputs (numpy arrays, lexical-weight dicts, per-text ColBERT matrices): `dense_scores`,
  `lexical_score(s)`, `colbert_score(s)`, `hybrid_scores`;
- padded training batches (torch, differentiable): `dense_score_matrix`, `sparse_score_matrix`,
  `colbert_score_matrix`.

Formulas (q = query, p = passage):
- dense: s = <e_q, e_p>;
- lexical: s = Σ_{t ∈ q ∩ p} w_q[t] · w_p[t] over token ids t both texts contain;
- ColBERT: s = (1/|q|) Σ_i max_j <E_q[i], E_p[j]>;
- hybrid: s = w_dense · s_dense + w_sparse · s_lex + w_colbert · s_colbert.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from m3core.modes import HYBRID_PRESETS

LexicalWeights = Mapping[str, float]

# The paper's hybrid weights under their old names (defined once: `m3core.modes.HYBRID_PRESETS`).
HYBRID_WEIGHTS_SHORT = HYBRID_PRESETS["short"]
HYBRID_WEIGHTS_LONG = HYBRID_PRESETS["long"]


# ---------------------------------------------------------------- inference outputs (numpy)
def dense_scores(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Inner products, `[nq, d] × [np, d] → [nq, np]`.

    >>> dense_scores(np.array([[1.0, 0.0], [0.6, 0.8]]), np.array([[0.0, 1.0], [1.0, 0.0]]))
    array([[0. , 1. ],
           [0.8, 0.6]])
    """
    q, p = np.atleast_2d(q), np.atleast_2d(p)
    return q @ p.T


def lexical_score(q: LexicalWeights, p: LexicalWeights) -> float:
    """Lexical matching score: sum over shared token ids of the product of weights.

    >>> lexical_score({"7": 0.5, "9": 0.2}, {"7": 0.4, "11": 1.0})
    0.2
    >>> lexical_score({"7": 0.5}, {"8": 0.5})
    0.0
    """
    if len(q) > len(p):
        q, p = p, q
    return float(sum(w * p[t] for t, w in q.items() if t in p))


def _lexical_csr(weights: Sequence[LexicalWeights], vocab: dict[str, int]) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for i, d in enumerate(weights):
        for t, w in d.items():
            rows.append(i)
            cols.append(vocab.setdefault(t, len(vocab)))
            vals.append(w)
    return rows, cols, vals


def lexical_scores(qs: Sequence[LexicalWeights], ps: Sequence[LexicalWeights]) -> np.ndarray:
    """`lexical_score` for every query × passage, `[nq, np]`, as one sparse matrix product.

    >>> lexical_scores([{"7": 0.5, "9": 0.2}], [{"7": 0.4}, {"9": 1.0, "7": 1.0}])
    array([[0.2, 0.7]])
    """
    vocab: dict[str, int] = {}
    qr, qc, qv = _lexical_csr(qs, vocab)
    pr, pc, pv = _lexical_csr(ps, vocab)
    qm = sp.csr_matrix((qv, (qr, qc)), shape=(len(qs), len(vocab)), dtype=np.float64)
    pm = sp.csr_matrix((pv, (pr, pc)), shape=(len(ps), len(vocab)), dtype=np.float64)
    return np.asarray((qm @ pm.T).todense())


def colbert_score(q: np.ndarray, p: np.ndarray) -> float:
    """Late interaction: each query vector's best match in the passage, averaged over query vectors.

    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> p = np.array([[0.8, 0.6], [1.0, 0.0]])
    >>> colbert_score(q, p)  # (max(0.8, 1.0) + max(0.6, 0.0)) / 2
    0.8
    """
    if len(q) == 0 or len(p) == 0:
        return 0.0
    return float((q @ p.T).max(axis=1).sum() / len(q))


def colbert_scores(qs: Sequence[np.ndarray], ps: Sequence[np.ndarray]) -> np.ndarray:
    """`colbert_score` for every query × passage, `[nq, np]`: all query vectors against one passage at a time.

    >>> q = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0]])]
    >>> p = [np.array([[0.8, 0.6], [1.0, 0.0]]), np.array([[0.0, 1.0]])]
    >>> colbert_scores(q, p)
    array([[0.8, 0.5],
           [0.6, 1. ]])
    """
    out = np.zeros((len(qs), len(ps)), dtype=np.float64)
    if not qs or not ps:
        return out
    lengths = np.array([len(q) for q in qs])
    all_q = np.concatenate([np.asarray(q) for q in qs])  # [Σ tq, d]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for j, p in enumerate(ps):
        if len(p) == 0:
            continue
        best = (all_q @ np.asarray(p).T).max(axis=1)  # [Σ tq]
        sums = np.add.reduceat(best, starts) if len(best) else np.zeros(len(qs))
        out[:, j] = np.where(lengths > 0, sums / np.maximum(lengths, 1), 0.0)
    return out


def hybrid_scores(dense, sparse, colbert, weights: Sequence[float] = HYBRID_WEIGHTS_SHORT):
    """Weighted sum of the three modes' scores (paper Eq. 1); works on floats, numpy arrays and tensors.

    >>> hybrid_scores(0.5, 2.0, 0.25, weights=(1.0, 0.3, 1.0))
    1.35
    """
    if len(weights) != 3:
        raise ValueError(f"hybrid weights must be (w_dense, w_sparse, w_colbert), got {tuple(weights)}")
    w_dense, w_sparse, w_colbert = weights
    return w_dense * dense + w_sparse * sparse + w_colbert * colbert


# ---------------------------------------------------------------- padded batches (torch, differentiable)
def dense_score_matrix(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """`[Bq, H] × [Bp, H] → [Bq, Bp]` inner products."""
    return q @ p.T


def sparse_score_matrix(
    q_weights: torch.Tensor, q_ids: torch.Tensor, p_weights: torch.Tensor, p_ids: torch.Tensor
) -> torch.Tensor:
    """Lexical matching scores of padded batches, `[Bq, Lq] + [Bp, Lp] → [Bq, Bp]`, differentiable.

    Token ids are mapped to a batch-local vocabulary (the ids present in the batch, U ≤ Bq·Lq + Bp·Lp), so the
    per-text max-weight vectors are `[B, U]`, never `[B, L, V]` or `[B, V]` over the full vocabulary.
    Weights must be ≥ 0 and 0 where a token should not count (padding, special tokens).

    >>> qw, qi = torch.tensor([[0.5, 0.2, 0.0]]), torch.tensor([[7, 9, 1]])
    >>> pw, pi = torch.tensor([[0.4, 0.3, 1.0], [1.0, 0.0, 0.0]]), torch.tensor([[7, 7, 11], [9, 1, 1]])
    >>> sparse_score_matrix(qw, qi, pw, pi)  # [[0.5*max(0.4,0.3), 0.2*1.0]]
    tensor([[0.2000, 0.2000]])
    """
    n_q = q_ids.numel()
    uniq, inverse = torch.unique(torch.cat([q_ids.reshape(-1), p_ids.reshape(-1)]), return_inverse=True)
    q_idx, p_idx = inverse[:n_q].view_as(q_ids), inverse[n_q:].view_as(p_ids)
    dtype = torch.promote_types(q_weights.dtype, p_weights.dtype)
    q_vec = q_weights.new_zeros(q_ids.shape[0], uniq.numel(), dtype=dtype).scatter_reduce(
        1, q_idx, q_weights.to(dtype), "amax"
    )
    p_vec = p_weights.new_zeros(p_ids.shape[0], uniq.numel(), dtype=dtype).scatter_reduce(
        1, p_idx, p_weights.to(dtype), "amax"
    )
    return q_vec @ p_vec.T


def colbert_score_matrix(
    q: torch.Tensor, q_mask: torch.Tensor, p: torch.Tensor, p_mask: torch.Tensor, chunk: int = 64
) -> torch.Tensor:
    """ColBERT scores of padded batches, `[Bq, Lq, D] × [Bp, Lp, D] → [Bq, Bp]`, differentiable.

    `q_mask` / `p_mask` (`[B, L]` bool) mark real vectors: padded passage vectors never win a max (the
    reference lets a zero padding vector beat negative similarities) and padded query rows are left out of the
    average. Passages are processed `chunk` at a time to bound the `[Bq, Lq, chunk, Lp]` similarity tensor.

    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]); qm = torch.tensor([[True, True]])
    >>> p = torch.tensor([[[0.8, 0.6], [1.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]])
    >>> pm = torch.tensor([[True, True], [True, False]])
    >>> colbert_score_matrix(q, qm, p, pm)  # row 2: (max(0.0) + max(1.0)) / 2
    tensor([[0.8000, 0.5000]])
    """
    q_weight = q_mask.to(q.dtype)
    denom = q_weight.sum(1, keepdim=True).clamp(min=1)  # [Bq, 1]
    parts = []
    for start in range(0, p.shape[0], chunk):
        sim = torch.einsum("qid,pjd->qipj", q, p[start : start + chunk])  # [Bq, Lq, c, Lp]
        sim = sim.masked_fill(~p_mask[start : start + chunk].bool()[None, None], float("-inf"))
        best = sim.max(-1).values  # [Bq, Lq, c]
        best = torch.where(torch.isfinite(best), best, torch.zeros_like(best)) * q_weight.unsqueeze(-1)
        parts.append(best.sum(1))
    return torch.cat(parts, dim=1) / denom
