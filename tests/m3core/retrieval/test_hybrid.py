"""Hybrid and ColBERT modes: scores are exactly the weighted sum of the per-mode scores of each candidate."""

from __future__ import annotations

import numpy as np
import pytest

from m3core import scoring
from m3core.retrieval import Embeddings, Retriever, RetrieverConfig, encode_texts, resolve_weights
from tests.support import textgen


@pytest.fixture(scope="module")
def encoded(tiny_embedder):
    examples = textgen.retrieval_pairs(40, seed=5)
    passages = [e["pos"][0] for e in examples] + [e["neg"][0] for e in examples]
    corpus = encode_texts(tiny_embedder, passages, model_id="tiny")
    queries = encode_texts(tiny_embedder, [e["query"] for e in examples], side="query", model_id="tiny")
    return corpus, queries


def _mode_matrices(q: Embeddings, c: Embeddings):
    """Every query × passage score in each mode, computed directly from `m3core.scoring`, no index."""
    return (
        scoring.dense_scores(q.dense, c.dense),
        scoring.lexical_scores(q.lexical, c.lexical),
        scoring.colbert_scores(q.colbert, c.colbert),
    )


@pytest.mark.parametrize(
    ("mode", "weights"),
    [
        ("all", (1.0, 0.3, 1.0)),
        ("all", (0.15, 0.5, 0.35)),
        ("dense+sparse", (1.0, 0.3, 1.0)),
        ("all", (0.2, 2.0, 0.7)),
    ],
)
def test_hybrid_scores_equal_weighted_sum_of_mode_scores(encoded, mode, weights):
    corpus, queries = encoded
    dense, sparse, colbert = _mode_matrices(queries, corpus)
    w_d, w_s, w_c = weights if mode == "all" else (weights[0], weights[1], 0.0)
    expected_all = w_d * dense + w_s * sparse + w_c * colbert
    scores, ids = Retriever(corpus, RetrieverConfig(weights=weights, candidates=20)).search(
        queries, mode, k=10
    )
    assert (ids >= 0).all()
    np.testing.assert_allclose(scores, np.take_along_axis(expected_all, ids, axis=1), rtol=1e-5, atol=1e-6)
    # ...and the list is sorted by that score.
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_hybrid_ranks_the_union_of_dense_and_sparse_candidates(encoded):
    corpus, queries = encoded
    dense, sparse, colbert = _mode_matrices(queries, corpus)
    total = dense + 0.3 * sparse + colbert
    r = Retriever(corpus, RetrieverConfig(weights="short", candidates=8))
    _, d_ids = r.search(queries, "dense", k=8)
    _, s_ids = r.search(queries, "sparse", k=8)
    _, h_ids = r.search(queries, "all", k=8)
    for i in range(len(queries)):
        union = np.array(sorted((set(d_ids[i]) | set(s_ids[i])) - {-1}))
        expected = union[np.argsort(-total[i, union], kind="stable")][:8]
        assert set(h_ids[i]) == set(expected)


def test_colbert_mode_reranks_dense_candidates(encoded):
    corpus, queries = encoded
    _, _, colbert = _mode_matrices(queries, corpus)
    r = Retriever(corpus, RetrieverConfig(candidates=15))
    _, dense_ids = r.search(queries, "dense", k=15)
    scores, ids = r.search(queries, "colbert", k=5)
    for i in range(len(queries)):
        cand = dense_ids[i]
        best = cand[np.argsort(-colbert[i, cand], kind="stable")][:5]
        assert set(ids[i]) == set(best)
        np.testing.assert_allclose(scores[i], colbert[i, ids[i]], rtol=1e-5)


def test_weight_presets_and_errors():
    assert resolve_weights("short") == (1.0, 0.3, 1.0)
    assert resolve_weights("long") == (0.15, 0.5, 0.35)
    with pytest.raises(ValueError, match="expected a preset"):
        resolve_weights("medium")
    with pytest.raises(ValueError, match="three non-negative"):
        resolve_weights((1.0, -1.0, 0.0))


def test_missing_outputs_are_a_clear_error(encoded):
    corpus, queries = encoded
    dense_only = Embeddings(dense=corpus.dense)
    with pytest.raises(ValueError, match=r"lack output\(s\) \['sparse'\]"):
        Retriever(dense_only).search(queries, "sparse", k=5)
    with pytest.raises(ValueError, match="unknown retrieval mode"):
        Retriever(corpus).search(queries, "splade", k=5)
