"""Lexical weights in the formats vector databases take: Qdrant, Milvus (a dict or a scipy CSR matrix),
Elasticsearch `sparse_vector`.

`M3Embedder.encode(..., return_sparse=True)` gives per text ``{str(token_id): weight}``. Every converter takes
one text's weights (and returns one converted value) or a list of them (and returns a list); `to_csr` stacks a
list into one matrix. Input is checked: a weights value that is not a dict, a key that is not a non-negative
integer token id (``"42"`` or ``42``), two keys for the same id, a weight that is not a number, negative or not
finite, raise ValueError naming the index of the text and the problem.

`SPARSE_FORMATS` maps the names `m3 encode --sparse-format` takes to converters ``(weights, tokenizer)``; the
formats that need no tokenizer ignore it:

>>> SPARSE_FORMATS["qdrant"]([{"7": 0.25, "3": 0.5}], None)
[{'indices': [3, 7], 'values': [0.5, 0.25]}]
>>> to_qdrant([{"7": 0.25}, {"3": -1.0}])
Traceback (most recent call last):
...
ValueError: lexical weights of text 1: the weight -1.0 of token id 3 is negative
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

LexicalWeights = Mapping[str | int, float]
Weights = LexicalWeights | Sequence[LexicalWeights]

FLOAT32_MAX = float(np.finfo(np.float32).max)


def to_ids(weights: Weights) -> dict[str, float] | list[dict[str, float]]:
    """The encoder's own format, checked: ``{str(token_id): weight}``, keys in the input's order.

    >>> to_ids({7: 0.25, "3": 0.5})
    {'7': 0.25, '3': 0.5}
    """
    return _per_text(weights, lambda pairs: {str(token_id): weight for token_id, weight in pairs})


def to_qdrant(weights: Weights) -> dict[str, list] | list[dict[str, list]]:
    """Qdrant's `SparseVector` fields: ``{"indices": [int, ...], "values": [float, ...]}``, sorted by id.

    The indices are unique (Qdrant requires it; the input has one key per id, two keys for one id raise).

    >>> to_qdrant({"42": 0.7, "7": 0.2})
    {'indices': [7, 42], 'values': [0.2, 0.7]}
    >>> to_qdrant([{"1": 1.0}, {}])
    [{'indices': [1], 'values': [1.0]}, {'indices': [], 'values': []}]
    """

    def convert(pairs: list[tuple[int, float]]) -> dict[str, list]:
        pairs = sorted(pairs)
        return {"indices": [token_id for token_id, _ in pairs], "values": [weight for _, weight in pairs]}

    return _per_text(weights, convert)


def to_milvus(weights: Weights) -> dict[int, float] | list[dict[int, float]]:
    """A Milvus `SPARSE_FLOAT_VECTOR` row: ``{token_id: weight}`` with int keys, sorted by id.

    (Written as JSON the keys become strings again; ``int(key)`` gives the index back.)

    >>> to_milvus({"42": 0.7, "7": 0.2})
    {7: 0.2, 42: 0.7}
    """
    return _per_text(weights, lambda pairs: dict(sorted(pairs)))


def to_csr(weights_list: Weights, vocab_size: int) -> sp.csr_matrix:
    """The texts' weights as one float32 `scipy.sparse.csr_matrix` of shape ``[n_texts, vocab_size]``.

    Row i holds text i's weights at the columns of its token ids (sorted); Milvus takes such a matrix for a
    batch of `SPARSE_FLOAT_VECTOR` rows. One dict gives a one-row matrix. Every id must be < `vocab_size`, and
    every weight must fit float32.

    >>> m = to_csr([{"3": 0.5, "1": 0.25}, {}, {"4": 1.0}], vocab_size=5)
    >>> m.shape, m.dtype
    ((3, 5), dtype('float32'))
    >>> m.toarray().tolist()
    [[0.0, 0.25, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]]
    >>> to_csr([{"1": 0.5}, {"5": 1.0}], vocab_size=5)
    Traceback (most recent call last):
    ...
    ValueError: lexical weights of text 1: token id 5 does not fit vocab_size 5
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    texts, _ = _as_list(weights_list)
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for i, weights in enumerate(texts):
        for token_id, weight in sorted(_checked(weights, i)):
            if token_id >= vocab_size:
                raise ValueError(
                    f"lexical weights of text {i}: token id {token_id} does not fit vocab_size {vocab_size}"
                )
            if weight > FLOAT32_MAX:
                raise ValueError(
                    f"lexical weights of text {i}: the weight {weight} of token id {token_id} overflows float32"
                )
            indices.append(token_id)
            data.append(weight)
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
        shape=(len(texts), int(vocab_size)),
    )


def to_tokens(weights: Weights, tokenizer: Any) -> dict[str, float] | list[dict[str, float]]:
    """``{token text: weight}``: each id decoded with ``tokenizer.decode([id])``, as
    `M3Embedder.convert_id_to_token` does.

    Two ids can decode to the same text (``"▁die"`` and ``"die"`` both give ``"die"``): the token then keeps
    the largest of their weights and the smaller ones are left out. (`convert_id_to_token` keeps whichever id
    comes last, which for the encoder's output, ordered by ascending weight, is also the largest.) A piece that
    decodes to nothing (a lone word boundary ``"▁"``) gets the key ``""``.

    >>> class Tokenizer:  # any object with decode(list_of_ids) -> str, e.g. a Hugging Face tokenizer
    ...     def decode(self, ids):
    ...         return {5: "die", 6: "die", 7: "Datei"}[ids[0]]
    >>> to_tokens({"5": 0.25, "6": 0.5, "7": 0.75}, Tokenizer())
    {'die': 0.5, 'Datei': 0.75}
    """
    return _by_token(weights, tokenizer, drop_zeros=False, dot_replacement=None)


def to_elasticsearch(
    weights: Weights, tokenizer: Any, *, dot_replacement: str | None = None
) -> dict[str, float] | list[dict[str, float]]:
    """A document value for an Elasticsearch `sparse_vector` field: ``{token text: weight}``.

    As `to_tokens` (ids decoded with ``tokenizer.decode([id])``; ids decoding to the same text keep the largest
    of their weights, the smaller ones are left out), and two more rules:

    - zero weights are left out: `sparse_vector` accepts strictly positive values only (a zero adds nothing to
      a dot product; the encoder itself never outputs one);
    - dots: Elasticsearch versions without elastic/elasticsearch PR #111981 (merged September 2024) reject
      feature names containing ``.`` ("[sparse_vector] fields do not support dots in feature names"), as
      `rank_features` fields do. By default the tokens are kept as they are, which versions with that change
      accept (a feature name is then taken whole, not as an object path). For an older
      cluster pass `dot_replacement` (a string without a dot): every ``.`` in a token is replaced by it, and
      tokens that then coincide keep the largest weight. Encode queries with the same setting, so that their
      features match the documents'.

    >>> class Tokenizer:
    ...     def decode(self, ids):
    ...         return {1: "3.5", 2: "3_5", 3: "gzip", 4: "Datei"}[ids[0]]
    >>> to_elasticsearch({"1": 0.5, "2": 0.25, "3": 0.75, "4": 0.0}, Tokenizer())
    {'3.5': 0.5, '3_5': 0.25, 'gzip': 0.75}
    >>> to_elasticsearch({"1": 0.5, "2": 0.25, "3": 0.75}, Tokenizer(), dot_replacement="_")
    {'3_5': 0.5, 'gzip': 0.75}
    """
    if dot_replacement is not None and (not isinstance(dot_replacement, str) or "." in dot_replacement):
        raise ValueError(f"dot_replacement must be a string without '.', got {dot_replacement!r}")
    return _by_token(weights, tokenizer, drop_zeros=True, dot_replacement=dot_replacement)


SPARSE_FORMATS: dict[str, Callable[[Weights, Any], Any]] = {
    "ids": lambda weights, tokenizer: to_ids(weights),
    "tokens": to_tokens,
    "qdrant": lambda weights, tokenizer: to_qdrant(weights),
    "milvus": lambda weights, tokenizer: to_milvus(weights),
    "elasticsearch": to_elasticsearch,
}


def _by_token(weights: Weights, tokenizer: Any, *, drop_zeros: bool, dot_replacement: str | None):
    names: dict[int, str] = {}  # decoding dominates the cost, and ids repeat across texts

    def convert(pairs: list[tuple[int, float]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for token_id, weight in sorted(pairs):
            if drop_zeros and weight == 0:
                continue
            if token_id not in names:
                names[token_id] = tokenizer.decode([token_id])
            name = names[token_id]
            if dot_replacement is not None:
                name = name.replace(".", dot_replacement)
            out[name] = max(weight, out.get(name, weight))
        return out

    return _per_text(weights, convert)


def _per_text(weights: Weights, convert: Callable[[list[tuple[int, float]]], Any]) -> Any:
    """`convert` applied to each text's checked (id, weight) pairs; one dict in, one value out."""
    texts, single = _as_list(weights)
    out = [convert(_checked(text, i)) for i, text in enumerate(texts)]
    return out[0] if single else out


def _as_list(weights: Weights) -> tuple[list, bool]:
    if isinstance(weights, Mapping):
        return [weights], True
    if isinstance(weights, list | tuple):
        return list(weights), False
    raise ValueError(
        f"lexical weights: expected a dict {{token id: weight}} or a list of them, got {type(weights).__name__}"
    )


def _checked(weights: object, i: int) -> list[tuple[int, float]]:
    """Text `i`'s weights as (token id, weight) pairs in the input's order, or ValueError naming text `i`."""
    where = f"lexical weights of text {i}"
    if not isinstance(weights, Mapping):
        raise ValueError(f"{where}: expected a dict {{token id: weight}}, got {type(weights).__name__}")
    pairs: list[tuple[int, float]] = []
    seen: set[int] = set()
    for key, value in weights.items():
        token_id = _token_id(key)
        if token_id is None:
            raise ValueError(f"{where}: the key {key!r} is not a non-negative integer token id")
        if token_id in seen:
            raise ValueError(f"{where}: token id {token_id} appears under two keys (the second is {key!r})")
        seen.add(token_id)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{where}: the weight {value!r} of token id {token_id} is not a number")
        weight = float(value)
        if not math.isfinite(weight):
            raise ValueError(f"{where}: the weight {weight} of token id {token_id} is not finite")
        if weight < 0:
            raise ValueError(f"{where}: the weight {weight} of token id {token_id} is negative")
        pairs.append((token_id, weight))
    return pairs


def _token_id(key: object) -> int | None:
    if isinstance(key, str):
        # isascii: str.isdigit also accepts other scripts' digits ("٣"), which are no token ids
        return int(key) if key.isascii() and key.isdigit() else None
    if isinstance(key, numbers.Integral) and not isinstance(key, bool) and key >= 0:
        return int(key)
    return None
