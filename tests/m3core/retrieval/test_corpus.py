"""Corpus embeddings are written to disk, reused when nothing changed, and re-encoded when something did."""

from __future__ import annotations

import numpy as np
import pytest

from m3core.retrieval import Embeddings, encode_texts
from tests.support import textgen


def test_roundtrip_and_reuse(tiny_embedder, tmp_path):
    texts = textgen.sentences(30, seed=3)
    first = encode_texts(tiny_embedder, texts, cache_dir=tmp_path / "c", model_id="m", chunk_size=7)
    assert len(first) == 30 and first.outputs == ("dense", "sparse", "colbert")
    loaded = Embeddings.load(tmp_path / "c")
    np.testing.assert_array_equal(loaded.dense, first.dense)
    assert loaded.lexical == first.lexical
    assert all(np.array_equal(a, b) for a, b in zip(loaded.colbert, first.colbert, strict=True))
    # Chunking does not change results: one chunk gives the same vectors.
    whole = encode_texts(tiny_embedder, texts, model_id="m")
    np.testing.assert_allclose(whole.dense, first.dense, atol=1e-5)

    # Same inputs: loaded from disk (the file is not rewritten).
    mtime = (tmp_path / "c" / "dense.npy").stat().st_mtime_ns
    again = encode_texts(tiny_embedder, texts, cache_dir=tmp_path / "c", model_id="m")
    assert (tmp_path / "c" / "dense.npy").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.dense, first.dense)

    # One changed text, or another model: re-encoded.
    changed = [*texts[:-1], texts[-1] + " extra"]
    other = encode_texts(tiny_embedder, changed, cache_dir=tmp_path / "c", model_id="m")
    assert (tmp_path / "c" / "dense.npy").stat().st_mtime_ns != mtime
    assert not np.array_equal(other.dense[-1], first.dense[-1])


def test_bad_outputs_are_clear_errors(tiny_embedder):
    with pytest.raises(ValueError, match="outputs must be a non-empty subset"):
        encode_texts(tiny_embedder, ["a"], outputs=("splade",))
    with pytest.raises(FileNotFoundError, match="not an embeddings directory"):
        Embeddings.load("/nonexistent-dir")
