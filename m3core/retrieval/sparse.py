"""Inverted index over M3 lexical weights (the sparse mode).

A passage's lexical weights ``{token_id: weight}`` become one row of a documents×vocabulary CSR matrix;
the index keeps its transpose, one CSR row per token = that token's posting list (doc ids + weights).
Searching multiplies the queries' sparse matrix by the posting matrix with scipy's sparse×sparse product,
which walks only the posting lists of the tokens a query has: its cost is proportional to the matching
postings, never to the vocabulary (a dense query×vocabulary product would be 250k columns wide for XLM-R).

The score of a (query, passage) pair is the inner product of their weights over shared tokens, i.e. the
same number as `m3core.scoring.lexical_score` (the tests check it against brute force).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from m3core.retrieval.topk import top_k_rows

log = logging.getLogger(__name__)

LexicalWeights = Mapping[str, float]


class SparseIndex:
    """Posting lists of a corpus's lexical weights; `search` returns the top-k passages per query.

    >>> index = SparseIndex.build([{"1": 0.5, "2": 0.1}, {"2": 1.0}, {"3": 2.0}])
    >>> scores, ids = index.search([{"2": 1.0}], k=5)
    >>> ids.tolist(), [round(float(s), 2) for s in scores[0]]
    ([[1, 0, -1, -1, -1]], [1.0, 0.1, -inf, -inf, -inf])
    """

    def __init__(self, postings: sp.csr_matrix, vocab: dict[str, int]) -> None:
        # postings: [n_tokens, n_docs]; row t holds the docs containing token t and their weights.
        self.postings = postings
        self.vocab = vocab

    @property
    def n_docs(self) -> int:
        return self.postings.shape[1]

    @property
    def n_postings(self) -> int:
        return int(self.postings.nnz)

    @classmethod
    def build(cls, weights: Sequence[LexicalWeights]) -> SparseIndex:
        """Index the lexical weights of a corpus (position in ``weights`` = doc id)."""
        vocab: dict[str, int] = {}
        indptr = np.zeros(len(weights) + 1, dtype=np.int64)
        cols: list[int] = []
        vals: list[float] = []
        for i, w in enumerate(weights):
            for token, value in w.items():
                cols.append(vocab.setdefault(str(token), len(vocab)))
                vals.append(float(value))
            indptr[i + 1] = len(cols)
        docs = sp.csr_matrix(
            (np.asarray(vals, dtype=np.float32), np.asarray(cols, dtype=np.int64), indptr),
            shape=(len(weights), max(len(vocab), 1)),
        )
        docs.sum_duplicates()
        postings = docs.T.tocsr()
        log.debug("sparse index: %d docs, %d tokens, %d postings", len(weights), len(vocab), postings.nnz)
        return cls(postings, vocab)

    def query_matrix(self, queries: Sequence[LexicalWeights]) -> sp.csr_matrix:
        """Queries as a [n_queries, n_tokens] CSR matrix; tokens no passage has are dropped (no postings)."""
        indptr = np.zeros(len(queries) + 1, dtype=np.int64)
        cols: list[int] = []
        vals: list[float] = []
        for i, w in enumerate(queries):
            for token, value in w.items():
                col = self.vocab.get(str(token))
                if col is not None:
                    cols.append(col)
                    vals.append(float(value))
            indptr[i + 1] = len(cols)
        return sp.csr_matrix(
            (np.asarray(vals, dtype=np.float32), np.asarray(cols, dtype=np.int64), indptr),
            shape=(len(queries), self.postings.shape[0]),
        )

    def scores(self, queries: Sequence[LexicalWeights]) -> sp.csr_matrix:
        """Sparse [n_queries, n_docs] matrix of lexical scores; only matching (query, doc) pairs are stored."""
        return (self.query_matrix(queries) @ self.postings).tocsr()

    def search(self, queries: Sequence[LexicalWeights], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` passages per query: ``(scores[nq, k] float32, ids[nq, k] int64)``.

        Only passages sharing a token with the query are candidates; missing slots are id -1, score -inf.
        Ties are broken by the lower doc id.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        m = self.scores(queries)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        for i in range(m.shape[0]):
            lo, hi = m.indptr[i], m.indptr[i + 1]
            if lo == hi:
                continue
            s, ids = top_k_rows(m.data[lo:hi][None, :], k, ids=m.indices[lo:hi][None, :])
            n = s.shape[1]
            out_scores[i, :n], out_ids[i, :n] = s[0], ids[0]
        return out_scores, out_ids

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` (an .npz file plus a .vocab.json next to it)."""
        path = Path(path)
        sp.save_npz(path.with_suffix(".npz"), self.postings)
        tokens = sorted(self.vocab, key=self.vocab.__getitem__)
        path.with_suffix(".vocab.json").write_text(json.dumps(tokens))

    @classmethod
    def load(cls, path: str | Path) -> SparseIndex:
        path = Path(path)
        postings = sp.load_npz(path.with_suffix(".npz")).tocsr()
        tokens = json.loads(path.with_suffix(".vocab.json").read_text())
        return cls(postings, {t: i for i, t in enumerate(tokens)})


def brute_force_search(
    queries: Sequence[LexicalWeights], passages: Sequence[LexicalWeights], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k: every (query, passage) pair scored with `m3core.scoring.lexical_score`, no index.

    Passages sharing no token with the query are not returned, as in `SparseIndex.search`.
    Used by tests and by the benchmark as the baseline the inverted index must match.
    """
    from m3core.scoring import lexical_score

    full = np.full((len(queries), len(passages)), -np.inf, dtype=np.float32)
    p_dicts = [{str(t): float(v) for t, v in p.items()} for p in passages]
    for i, q in enumerate(queries):
        qd = {str(t): float(v) for t, v in q.items()}
        for j, p in enumerate(p_dicts):
            if not qd.keys().isdisjoint(p):
                full[i, j] = lexical_score(qd, p)
    return top_k_rows(full, k)
