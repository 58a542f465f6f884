"""The sparse inverted index returns what brute-force scoring of every pair returns."""

from __future__ import annotations

import numpy as np
import pytest

from m3core.retrieval.sparse import SparseIndex, brute_force_search


def _random_weights(rng, n, vocab, max_len):
    return [
        {str(t): float(rng.random()) for t in rng.choice(vocab, rng.integers(1, max_len), replace=False)}
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_top_k_as_brute_force_on_random_weights(seed):
    rng = np.random.default_rng(seed)
    passages = _random_weights(rng, 400, 250, 40)
    queries = _random_weights(rng, 30, 300, 10)  # ids 250..299 exist in no passage
    index = SparseIndex.build(passages)
    for k in (1, 10, 50):
        s, ids = index.search(queries, k)
        bs, bids = brute_force_search(queries, passages, k)
        np.testing.assert_array_equal(ids, bids)
        np.testing.assert_allclose(s, bs, rtol=1e-5)


def test_same_top_k_as_brute_force_on_model_weights(tiny_embedder):
    from tests.support import textgen

    texts = [e["pos"][0] for e in textgen.retrieval_pairs(30)]
    queries = [e["query"] for e in textgen.retrieval_pairs(30)]
    p = tiny_embedder.encode_corpus(texts, return_dense=False, return_sparse=True)["lexical_weights"]
    q = tiny_embedder.encode_queries(queries, return_dense=False, return_sparse=True)["lexical_weights"]
    s, ids = SparseIndex.build(p).search(q, 10)
    bs, bids = brute_force_search(q, p, 10)
    np.testing.assert_array_equal(ids, bids)
    np.testing.assert_allclose(s, bs, rtol=1e-5)


def test_index_only_touches_matching_postings():
    index = SparseIndex.build([{"1": 1.0}, {"2": 1.0}, {"3": 1.0}])
    m = index.scores([{"2": 2.0, "404": 1.0}])
    assert m.nnz == 1 and m[0, 1] == pytest.approx(2.0)  # one posting matched, nothing else computed
    s, ids = index.search([{"404": 1.0}], 3)  # no shared token: nothing found
    assert ids.tolist() == [[-1, -1, -1]] and np.isneginf(s).all()


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    passages, queries = _random_weights(rng, 50, 80, 10), _random_weights(rng, 5, 80, 5)
    index = SparseIndex.build(passages)
    index.save(tmp_path / "sparse")
    again = SparseIndex.load(tmp_path / "sparse")
    np.testing.assert_array_equal(index.search(queries, 7)[1], again.search(queries, 7)[1])


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k must be >= 1"):
        SparseIndex.build([{"1": 1.0}]).search([{"1": 1.0}], 0)
