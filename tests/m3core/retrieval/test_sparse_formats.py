"""Lexical weights converted to the vector databases' formats reproduce the encoder's output exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from m3core.retrieval.sparse_formats import (
    SPARSE_FORMATS,
    to_csr,
    to_elasticsearch,
    to_ids,
    to_milvus,
    to_qdrant,
    to_tokens,
)

# "this is" and "die studie" tokenize (in the tiny model) to "▁is"/"is" and "▁die"/"die": different ids that
# decode to the same text, the case the token formats merge.
TEXTS = [
    "How do I list the files in a directory?",
    "Kaffee die studie am Berg und Fluss",
    "is this the river near the mountain",
    "le moteur du pont en hiver",
    "который двигатель и гавань",
    "很 桥梁 引擎 港口",
]


@pytest.fixture(scope="module")
def weights(tiny_embedder):
    out = tiny_embedder.encode(TEXTS, return_dense=False, return_sparse=True)["lexical_weights"]
    assert len(out) == len(TEXTS) and all(out), "every text should have lexical weights"
    return out


def _max_by_token(w, tokenizer):
    expected = {}
    for key, value in w.items():
        token = tokenizer.decode([int(key)])
        expected[token] = max(value, expected.get(token, value))
    return expected


def test_qdrant_indices_and_values_reproduce_the_dict(weights):
    converted = to_qdrant(weights)
    assert len(converted) == len(weights)
    for w, q in zip(weights, converted, strict=True):
        assert set(q) == {"indices", "values"}
        assert q["indices"] == sorted(set(q["indices"])), "indices must be unique and sorted"
        assert all(type(i) is int for i in q["indices"]) and all(type(v) is float for v in q["values"])
        assert dict(zip(map(str, q["indices"]), q["values"], strict=True)) == w
    assert to_qdrant(weights[1]) == converted[1]


def test_milvus_dict_has_int_keys_sorted_and_the_same_weights(weights):
    for w, m in zip(weights, to_milvus(weights), strict=True):
        assert list(m) == sorted(int(k) for k in w)
        assert {str(k): v for k, v in m.items()} == w


def test_ids_format_is_the_encoder_output_unchanged(weights):
    assert to_ids(weights) == weights
    assert [list(d) for d in to_ids(weights)] == [list(d) for d in weights]  # key order too


def test_csr_row_i_equals_text_i(weights, tiny_embedder):
    vocab_size = len(tiny_embedder.tokenizer)
    m = to_csr(weights, vocab_size)
    assert m.shape == (len(weights), vocab_size) and m.dtype == np.float32
    assert m.nnz == sum(len(w) for w in weights)
    for i, w in enumerate(weights):
        row = m.getrow(i)
        assert {str(j): float(v) for j, v in zip(row.indices, row.data, strict=True)} == w
    assert to_csr(weights[0], vocab_size).shape == (1, vocab_size)
    assert to_csr([], vocab_size).shape == (0, vocab_size)


def test_csr_rejects_an_id_beyond_the_vocabulary(weights):
    top = max(int(k) for k in weights[2])
    with pytest.raises(ValueError, match=rf"text 2: token id {top} does not fit vocab_size {top}$"):
        to_csr([{"0": 1.0}, {"1": 1.0}, weights[2]], vocab_size=top)
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        to_csr(weights, vocab_size=0)


def test_elasticsearch_keys_are_the_tokens_and_weights_the_max_over_ids(weights, tiny_embedder):
    tokenizer = tiny_embedder.tokenizer
    converted = to_elasticsearch(weights, tokenizer)
    merged = 0
    for w, es in zip(weights, converted, strict=True):
        assert set(es) == {tokenizer.decode([int(k)]) for k in w}
        assert es == _max_by_token(w, tokenizer)
        merged += len(w) - len(es)
    assert merged > 0, "the texts should include ids that decode to the same token"
    assert to_tokens(weights, tokenizer) == converted  # no zero weights and no dots in the tiny vocabulary


def test_merged_tokens_keep_the_largest_weight_in_any_input_order():
    tokenizer = _Tokenizer({1: "die", 2: "die", 3: "3.5", 4: "3_5", 5: "gzip"})
    assert to_tokens({"2": 0.5, "1": 0.25}, tokenizer) == {"die": 0.5}
    assert to_tokens({"1": 0.5, "2": 0.25}, tokenizer) == {"die": 0.5}
    assert to_elasticsearch({"3": 0.5, "4": 0.75}, tokenizer) == {"3.5": 0.5, "3_5": 0.75}
    assert to_elasticsearch({"3": 0.5, "4": 0.25}, tokenizer, dot_replacement="_") == {"3_5": 0.5}
    assert to_elasticsearch({"3": 0.5, "4": 0.25}, tokenizer, dot_replacement="") == {"35": 0.5, "3_5": 0.25}
    with pytest.raises(ValueError, match=r"dot_replacement must be a string without '\.'"):
        to_elasticsearch({"3": 0.5}, tokenizer, dot_replacement="..")


def test_zero_weights_are_kept_except_for_elasticsearch():
    tokenizer = _Tokenizer({1: "die", 5: "gzip"})
    w = {"1": 0.0, "5": 0.5}
    assert to_qdrant(w) == {"indices": [1, 5], "values": [0.0, 0.5]}
    assert to_milvus(w) == {1: 0.0, 5: 0.5}
    assert to_tokens(w, tokenizer) == {"die": 0.0, "gzip": 0.5}
    assert to_elasticsearch(w, tokenizer) == {"gzip": 0.5}


def test_int_and_numpy_keys_and_values_are_accepted():
    w = {np.int64(7): np.float32(0.5), 3: 1, "11": 0.25}
    assert to_qdrant(w) == {"indices": [3, 7, 11], "values": [1.0, 0.5, 0.25]}


BAD = [
    ([{"1": 0.5}, [("1", 0.5)]], r"text 1: expected a dict \{token id: weight\}, got list"),
    ({"abc": 0.5}, r"text 0: the key 'abc' is not a non-negative integer token id"),
    ({"-3": 0.5}, r"text 0: the key '-3' is not a non-negative integer token id"),
    ({"٣": 0.5}, r"text 0: the key '٣' is not a non-negative integer token id"),
    ({1.0: 0.5}, r"text 0: the key 1.0 is not a non-negative integer token id"),
    ({True: 0.5}, r"text 0: the key True is not a non-negative integer token id"),
    ({"7": 0.5, 7: 0.25}, r"text 0: token id 7 appears under two keys \(the second is 7\)"),
    ([{}, {}, {"7": -0.5}], r"text 2: the weight -0.5 of token id 7 is negative"),
    ({"7": math.nan}, r"text 0: the weight nan of token id 7 is not finite"),
    ([{"1": 1.0}, {"7": math.inf}], r"text 1: the weight inf of token id 7 is not finite"),
    ({"7": "0.5"}, r"text 0: the weight '0.5' of token id 7 is not a number"),
    ({"7": None}, r"text 0: the weight None of token id 7 is not a number"),
    ("7", r"expected a dict \{token id: weight\} or a list of them, got str"),
]


@pytest.mark.parametrize("name", sorted(SPARSE_FORMATS))
@pytest.mark.parametrize(("bad", "message"), BAD)
def test_every_format_rejects_bad_input_naming_the_text(name, bad, message):
    with pytest.raises(ValueError, match=message):
        SPARSE_FORMATS[name](bad, _Tokenizer({}))


@pytest.mark.parametrize(("bad", "message"), BAD)
def test_csr_rejects_bad_input_naming_the_text(bad, message):
    with pytest.raises(ValueError, match=message):
        to_csr(bad, vocab_size=100)


def test_csr_rejects_a_weight_float32_cannot_hold():
    with pytest.raises(ValueError, match=r"text 0: the weight 1e\+40 of token id 3 overflows float32"):
        to_csr({"3": 1e40}, vocab_size=10)


class _Tokenizer:
    """A stand-in with the one method the token formats use; ids not in `names` decode to "<id>"."""

    def __init__(self, names: dict[int, str]):
        self.names = names

    def decode(self, ids: list[int]) -> str:
        return self.names.get(ids[0], f"<{ids[0]}>")
