"""BM25 baseline (bm25s) with a tokenizer that works across the languages of the eval sets.

Tokenization: NFKC + casefold, then Unicode word characters (``\\w+``). Scripts written without spaces
(Chinese Han, Japanese kana) would otherwise become one "word" per clause that never matches a query, so
runs of those characters are cut into overlapping character bigrams — the standard trick of Lucene's
CJKAnalyzer, which needs no dictionary and recovers most two-character words. Korean (Hangul) is spaced
and keeps whole words. No stemming or stop words: they are language-specific and BM25's IDF already
discounts frequent terms. Thai/Lao/Khmer (unspaced too) would need a segmenter and are left as runs.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np

_WORD = re.compile(r"\w+")
# Han (CJK unified + extension A + compatibility), hiragana, katakana, half-width katakana.
_CJK_CLASS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_CJK_SPLIT = re.compile(f"[{_CJK_CLASS}]+|[^{_CJK_CLASS}]+")
_CJK = re.compile(f"[{_CJK_CLASS}]")


def tokenize(text: str) -> list[str]:
    """Lowercased Unicode words; CJK runs as character bigrams.

    >>> tokenize("Der Hund BELLT, l'été!")
    ['der', 'hund', 'bellt', 'l', 'été']
    >>> tokenize("ls 列出目录内容")
    ['ls', '列出', '出目', '目录', '录内', '内容']
    >>> tokenize("猫")
    ['猫']
    """
    tokens: list[str] = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).casefold()):
        for run in _CJK_SPLIT.findall(word):
            if _CJK.match(run):
                tokens.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
            else:
                tokens.append(run)
    return tokens


class BM25Index:
    """bm25s over a corpus ``{doc_id: text}``; `search` gives a run ``{query_id: {doc_id: score}}``."""

    def __init__(self, corpus: Mapping[str, str], k1: float = 1.5, b: float = 0.75) -> None:
        import bm25s

        self.doc_ids = list(corpus)
        self.retriever = bm25s.BM25(k1=k1, b=b)
        # bm25s needs at least one token per document; an empty passage gets a placeholder no query has.
        self.retriever.index([tokenize(t) or ["\x00"] for t in corpus.values()], show_progress=False)

    def search(self, queries: Mapping[str, str], k: int = 100) -> dict[str, dict[str, float]]:
        """Top-``k`` documents per query; documents scoring 0 (no shared term) are left out."""
        if not queries:
            return {}
        qids = list(queries)
        tokens: Sequence[list[str]] = [tokenize(queries[q]) or ["\x00"] for q in qids]
        kk = min(k, len(self.doc_ids))
        res = self.retriever.retrieve(tokens, k=kk, show_progress=False)
        docs, scores = np.asarray(res.documents), np.asarray(res.scores)
        return {
            q: {self.doc_ids[int(d)]: float(s) for d, s in zip(docs[i], scores[i], strict=True) if s > 0}
            for i, q in enumerate(qids)
        }
