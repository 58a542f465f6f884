"""`m3 encode --output --sparse-format`: each format is written to the JSON file and parses back."""

from __future__ import annotations

import json

import pytest

from m3core import cli
from m3core.commands import encode
from m3core.retrieval import sparse_formats

TEXTS = ["How do I list the files?", "Kaffee die studie am Berg", "le moteur du pont", "который двигатель"]


def _encode(tmp_path, tiny_model_dir, *extra: str) -> dict:
    path = tmp_path / "out.json"
    rc = cli.main(["-q", "encode", "--model", str(tiny_model_dir), "--output", str(path), *extra, *TEXTS])
    assert rc == 0
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ids_output(tmp_path_factory, tiny_model_dir):
    return _encode(tmp_path_factory.mktemp("encode-ids"), tiny_model_dir)


def test_the_cli_choices_are_the_library_formats():
    assert tuple(sparse_formats.SPARSE_FORMATS) == encode.SPARSE_FORMAT_NAMES


def test_default_output_is_the_embedders_lexical_weights_unchanged(ids_output, tiny_embedder):
    assert set(ids_output) == {"texts", "dense_vecs", "lexical_weights", "colbert_vecs"}
    assert ids_output["texts"] == TEXTS
    expected = tiny_embedder.encode(TEXTS, return_dense=False, return_sparse=True)["lexical_weights"]
    assert len(ids_output["lexical_weights"]) == len(TEXTS)
    for got, want in zip(ids_output["lexical_weights"], expected, strict=True):
        assert list(got) == list(want)
        assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("fmt", ["tokens", "qdrant", "milvus", "elasticsearch"])
def test_each_format_is_written_and_parses_back(
    fmt, tmp_path, tiny_model_dir, tiny_embedder, ids_output, capsys
):
    capsys.readouterr()
    data = _encode(tmp_path, tiny_model_dir, "--sparse-format", fmt)
    printed = capsys.readouterr().out
    assert f"({fmt} lexical weights)" in printed and "    lexical = {" in printed  # the summary is unchanged
    assert data["sparse_format"] == fmt and data["texts"] == TEXTS
    assert len(data["dense_vecs"]) == len(data["colbert_vecs"]) == len(TEXTS)
    ids = ids_output["lexical_weights"]
    got = data["lexical_weights"]
    assert len(got) == len(ids)
    for written, w in zip(got, ids, strict=True):
        if fmt == "qdrant":
            assert written["indices"] == sorted({int(k) for k in w})
            assert dict(zip(map(str, written["indices"]), written["values"], strict=True)) == pytest.approx(w)
        elif fmt == "milvus":
            assert [int(k) for k in written] == sorted(int(k) for k in w)
            assert written == pytest.approx(w)
        else:
            expected = sparse_formats.to_tokens(w, tiny_embedder.tokenizer)
            assert list(written) == list(expected) and written == pytest.approx(expected)


def test_a_sparse_format_without_output_is_a_one_line_error(capsys, tiny_model_dir):
    rc = cli.main(["-q", "encode", "--model", str(tiny_model_dir), "--sparse-format", "qdrant", "hello"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == cli.USER_ERROR
    assert err == ["m3 encode: error: --sparse-format qdrant says how --output writes: give --output FILE"]
