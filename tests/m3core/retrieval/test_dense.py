"""faiss dense index: exact for flat, high recall for the approximate kinds, -1 padding past the corpus."""

from __future__ import annotations

import numpy as np
import pytest

from m3core.retrieval.dense import DenseIndex, DenseIndexConfig


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_equals_numpy_brute_force():
    rng = np.random.default_rng(0)
    p, q = _unit(rng, 500, 32), _unit(rng, 20, 32)
    s, ids = DenseIndex.build(p).search(q, 10)
    full = q @ p.T
    np.testing.assert_array_equal(ids, np.argsort(-full, axis=1)[:, :10])
    np.testing.assert_allclose(s, np.take_along_axis(full, ids, axis=1), rtol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_have_high_recall(kind):
    # Clustered data, like real embeddings (uniform random vectors have no structure for IVF to use).
    rng = np.random.default_rng(1)
    centers = _unit(rng, 40, 32)
    p = centers[rng.integers(40, size=4000)] + 0.3 * rng.standard_normal((4000, 32)).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    q = p[rng.choice(4000, 50, replace=False)] + 0.1 * rng.standard_normal((50, 32)).astype(np.float32)
    exact = np.argsort(-(q @ p.T), axis=1)[:, :10]
    _, ids = DenseIndex.build(p, DenseIndexConfig(kind=kind)).search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)])
    assert recall > 0.8, f"{kind} recall@10 {recall:.2f}"


def test_k_larger_than_corpus_is_padded(tmp_path):
    index = DenseIndex.build(np.eye(3, dtype=np.float32))
    s, ids = index.search(np.eye(3, dtype=np.float32)[:1], 5)
    assert ids[0, 0] == 0 and ids[0, 3:].tolist() == [-1, -1] and np.isneginf(s[0, 3:]).all()
    index.save(tmp_path / "dense.faiss")
    assert DenseIndex.load(tmp_path / "dense.faiss").n_docs == 3


def test_bad_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dense index kind 'lsh'"):
        DenseIndex.build(np.eye(3, dtype=np.float32), DenseIndexConfig(kind="lsh"))  # type: ignore[arg-type]
