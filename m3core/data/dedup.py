"""Deduplication: exact (content hash ids, checked in SQL against the warehouse) and near-duplicate.

Near-duplicates: short texts (pairs) compare by a *near key* — the hash of the case- and
punctuation-folded texts ("Open File…" ~ "open file"), exact in SQL at any scale. Long documents compare
by MinHash over character 5-grams with LSH (datasketch), per language; signatures are stored in the
warehouse so a later run checks new documents against everything already there.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from m3core.data.records import content_hash

_NON_WORD = re.compile(r"[\W_]+")
NUM_PERM = 64
SHINGLE = 5
SCHEME = "affine32"  # datasketch 2 asks for the hashing scheme when rebuilding from stored values
MAX_SHINGLE_CHARS = 20_000  # documents beyond this compare on their first 20k characters


def fold(text: str) -> str:
    """Casefolded, without punctuation or whitespace (any script).

    >>> fold("Open  File…") == fold("open file")
    True
    """
    return _NON_WORD.sub("", text.casefold())


def near_key(kind: str, query: str, positive: str) -> str:
    """Equal for pairs that differ only in case, punctuation or spacing."""
    return content_hash(kind, fold(query), fold(positive))


def minhash_signature(text: str, num_perm: int = NUM_PERM) -> bytes:
    """MinHash (datasketch, fixed seed) (crc32 hashes) over the set of character 5-grams of the folded text."""
    from datasketch import MinHash

    folded = " ".join(text.casefold().split())[:MAX_SHINGLE_CHARS]
    shingles = {folded[i : i + SHINGLE] for i in range(max(1, len(folded) - SHINGLE + 1))}
    # crc32 (C) instead of datasketch's default sha1-per-shingle: 10x faster, stable across processes.
    mh = MinHash(num_perm=num_perm, seed=1, scheme=SCHEME, hashfunc=zlib.crc32)
    mh.update_batch([s.encode("utf-8") for s in shingles])
    return mh.hashvalues.astype(np.uint64).tobytes()


class NearDuplicateIndex:
    """MinHash LSH per language: `find(lang, sig)` gives a stored doc id that is a near duplicate.

    >>> idx = NearDuplicateIndex(threshold=0.8)
    >>> a = minhash_signature("the quick brown fox jumps over the lazy dog " * 20)
    >>> idx.add("en", "d1", a)
    >>> idx.find("en", minhash_signature("The quick brown fox jumps over the lazy dog " * 20 + "!"))
    'd1'
    >>> idx.find("de", a) is None
    True
    """

    def __init__(self, threshold: float = 0.9, num_perm: int = NUM_PERM) -> None:
        self.threshold = threshold
        self.num_perm = num_perm
        self._lsh: dict = {}
        self._stored: dict = {}

    def _minhash(self, sig: bytes):
        from datasketch import MinHash

        return MinHash(
            num_perm=self.num_perm, seed=1, scheme=SCHEME, hashvalues=np.frombuffer(sig, dtype=np.uint64)
        )

    def _index(self, lang: str):
        from datasketch import MinHashLSH

        if lang not in self._lsh:
            # A lower LSH threshold for candidates (recall), confirmed against `threshold` in find().
            self._lsh[lang] = MinHashLSH(threshold=max(0.5, self.threshold - 0.2), num_perm=self.num_perm)
        return self._lsh[lang]

    def find(self, lang: str, sig: bytes) -> str | None:
        """A stored near duplicate's id (Jaccard estimate ≥ threshold), or None."""
        if lang not in self._lsh:
            return None
        mh = self._minhash(sig)
        best, best_j = None, 0.0
        for key in self._lsh[lang].query(mh):  # LSH candidates; confirm with the Jaccard estimate
            j = mh.jaccard(self._stored[key])
            if j >= self.threshold and j > best_j:
                best, best_j = key, j
        return best

    def add(self, lang: str, doc_id: str, sig: bytes) -> None:
        mh = self._minhash(sig)
        self._stored[doc_id] = mh
        self._index(lang).insert(doc_id, mh)

    def __len__(self) -> int:
        return len(self._stored)
