"""Scale-out: corpus encoding as mapped shard tasks on a local Dask cluster (2 worker processes) equals
encoding the corpus in one process."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import textgen
from tests.support.procs import platform_home


@pytest.fixture(scope="module")
def harness(tmp_path_factory, prefect_server):
    with platform_home(tmp_path_factory.mktemp("m3home-dask")) as home:
        yield home


def test_sharded_encoding_on_dask_equals_one_process(harness, tiny_model_dir, tmp_path):
    from flows.encode_corpus import encode_corpus
    from m3core import M3Embedder
    from m3core.retrieval.corpus import Embeddings

    texts = [textgen.long_text(5 + i % 30, seed=i) for i in range(37)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    merged = Embeddings.load(encode_corpus(str(tiny_model_dir), str(corpus), str(tmp_path / "emb"), shards=4))
    ref = M3Embedder(str(tiny_model_dir), show_progress=False).encode(
        texts, return_sparse=True, return_colbert_vecs=True
    )
    assert merged.meta["shards"] == 4 and len(merged) == len(texts)
    np.testing.assert_allclose(merged.dense, ref["dense_vecs"], atol=1e-5)
    for got, want in zip(merged.lexical, ref["lexical_weights"], strict=True):
        assert got == pytest.approx(want, abs=1e-5)
    for got, want in zip(merged.colbert, ref["colbert_vecs"], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_bad_corpus_line_is_named(tmp_path):
    from m3core.retrieval.corpus import read_corpus

    bad = tmp_path / "c.jsonl"
    bad.write_text('{"text": "ok"}\n{"title": "no text"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2: expected an object with a 'text'"):
        read_corpus(str(bad))
