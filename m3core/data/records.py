"""What sources produce: pairs, long documents, and rejected records — each with its provenance.

A source never drops input silently: anything it cannot turn into a `Pair` or `Document` becomes a
`Rejected` with the place it came from and why, and the pipeline stores it in the quarantine table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal, get_args

PairKind = Literal["translation", "title-body", "question-answer", "synthetic"]
PAIR_KINDS: tuple[str, ...] = get_args(PairKind)


def content_hash(*parts: str) -> str:
    """A stable 128-bit hex id of `parts` (order-sensitive; NUL-separated so ("ab","c") != ("a","bc")).

    >>> content_hash("a", "b") == content_hash("a", "b") != content_hash("ab", "")
    True
    """
    return hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=16).hexdigest()


@dataclass(slots=True)
class Pair:
    """A query → positive passage pair. `lang` is the positive's language, `query_lang` the query's."""

    kind: str
    query: str
    positive: str
    lang: str
    query_lang: str
    source: str
    location: str
    group_key: str = ""  # split unit: pairs with equal keys land in the same train/dev/test split
    doc_id: str | None = None
    lang_conf: float | None = None
    query_lang_conf: float | None = None
    near_key: str = ""  # set by the pipeline: hash of the case/punctuation-folded texts

    @property
    def pair_id(self) -> str:
        return content_hash(self.kind, self.query, self.positive)


@dataclass(slots=True)
class Document:
    """A long text (man page, article) kept whole for synthetic query generation and eval corpora."""

    title: str
    text: str
    lang: str
    source: str
    location: str
    group_key: str = ""
    meta: dict = field(default_factory=dict)
    lang_conf: float | None = None
    detected_lang: str | None = None
    signature: bytes | None = None  # set by the pipeline: MinHash values for near-duplicate search

    @property
    def doc_id(self) -> str:
        return content_hash(self.lang, self.title, self.text)


@dataclass(slots=True)
class Rejected:
    """An input record that did not become data, with where it was and why (goes to quarantine)."""

    source: str
    location: str
    reason: str
    detail: str = ""
    lang: str | None = None
    content: str = ""

    @property
    def quarantine_id(self) -> str:
        return content_hash(self.source, self.location, self.reason)


Record = Pair | Document | Rejected
