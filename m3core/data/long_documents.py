"""Long-document retrieval data from the warehouse's documents, without an LLM: held-out sets and training lines.

Both are built the same way, an inverse-cloze task (Lee et al. 2019, ORQA): a *query* is one sentence taken from
deep inside a long document (starting past the first `deep_from` tokens, ending within `max_tokens`), and the
document it came from, **with that sentence removed**, is the one relevant document. Removing it means the
sentence cannot be found by copying; what is left near it (the rest of its paragraph, past token 512) is what
answers it, so a model that reads only the first 512 tokens cannot see the answer and truncation shows.

- `export_long_eval_sets`: BEIR sets `long-<L>`, queries from the **test** split's documents only; corpus = every
  long document in L (all splits), the query documents with their sentence removed.
- `export_long_training`: FlagEmbedding lines from the **train** split's documents (the whole document, minus the
  sentence, is the positive). The split is `SplitSpec.of(group_key)`, and a man page's group key is shared by all
  its translations, so no page whose sentence is a test query — in any language — is ever a training positive.

Token counts are the backbone's own (its tokenizer is passed in), so "past token 512" means what the model sees.
The LLM recipe (MLDR: a question about one paragraph → the whole document) is `m3 synth generate` with
`selection.splits: [train]` and `m3 synth export --positive document`.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as typed_dataclass

from m3core.data.examples import Example, write_jsonl
from m3core.data.export import SplitSpec, _rank, _write_beir
from m3core.data.warehouse import Warehouse

log = logging.getLogger(__name__)

# Sentence ends: Latin-script punctuation followed by white space, or a CJK full stop / mark (no space follows).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
# A word, or one CJK / kana / hangul character (a sentence's length in "units" without a tokenizer).
_UNIT = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]|\w+")


# A pydantic dataclass: the retrain flow's `long.documents` parameter is this type, so a typo in a key is an error.
@typed_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LongDocSpec:
    """What counts as a long document and which sentences make queries."""

    min_tokens: int = 1024  # documents shorter than this (backbone tokens) are not in the long sets
    max_tokens: int = 8192  # a query sentence must end within the first max_tokens tokens
    deep_from: int = 512  # ... and start at or past this token: invisible to a model truncated there
    queries_per_doc: int = 2
    min_chars: int = 16
    max_chars: int = 300
    min_units: int = 8  # words (a CJK character counts as one)
    min_letter_share: float = 0.75  # of the non-space characters: prose, not an option list or code
    max_corpus_per_language: int | None = None  # cap the corpus (stable sample; query documents always kept)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.deep_from < self.max_tokens:
            raise ValueError(f"deep_from={self.deep_from} must be in (0, max_tokens={self.max_tokens})")
        if self.min_tokens <= self.deep_from:
            raise ValueError(
                f"min_tokens={self.min_tokens} must exceed deep_from={self.deep_from}: a shorter document has "
                "no sentence past deep_from"
            )
        if self.queries_per_doc < 1:
            raise ValueError(f"queries_per_doc={self.queries_per_doc} must be >= 1")


@dataclass
class LongDocument:
    doc_id: str
    lang: str
    group_key: str
    text: str
    n_tokens: int
    offsets: list[tuple[int, int]]  # character span of each token (no special tokens)


def _normalize(text: str) -> str:
    return " ".join(text.split())


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text` (white space trimmed).

    >>> t = "Erste Zeile. Zweite Zeile!  Dritte\\nZeile 列出目录。排序"
    >>> [t[s:e] for s, e in sentence_spans(t)]
    ['Erste Zeile.', 'Zweite Zeile!', 'Dritte\\nZeile 列出目录。', '排序']
    """
    spans, start = [], 0
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.start() if m is not None else len(text)
        s, e = start, end
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            spans.append((s, e))
        if m is not None:
            start = m.end()
    return spans


def _is_prose(sentence: str, spec: LongDocSpec) -> bool:
    flat = _normalize(sentence)
    if not spec.min_chars <= len(flat) <= spec.max_chars or len(_UNIT.findall(flat)) < spec.min_units:
        return False
    if flat.startswith(("-", "+", "$", "#", "/")):  # an option line, a shell prompt, a path
        return False
    chars = [c for c in flat if not c.isspace()]
    return sum(c.isalpha() for c in chars) >= spec.min_letter_share * len(chars)


def load_long_documents(
    wh: Warehouse,
    tokenizer: Any,
    spec: LongDocSpec,
    *,
    langs: Sequence[str] | None = None,
    source: str | None = "manpages",
) -> dict[str, list[LongDocument]]:
    """The warehouse's documents of at least `spec.min_tokens` tokens (under `tokenizer`), by language."""
    sql = "SELECT doc_id, lang, coalesce(group_key, doc_id), text FROM documents WHERE n_chars >= ?"
    params: list[Any] = [spec.min_tokens]  # a token covers at least one character: a cheap prefilter
    if source:
        sql += " AND source = ?"
        params.append(source)
    if langs:
        sql += " AND lang IN ?"
        params.append(list(langs))
    rows = wh.con.execute(sql + " ORDER BY lang, doc_id", params).fetchall()
    out: dict[str, list[LongDocument]] = defaultdict(list)
    batch = 64
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        enc = tokenizer(
            [r[3] for r in chunk], add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        for (doc_id, lang, group_key, text), offsets in zip(chunk, enc["offset_mapping"], strict=True):
            if len(offsets) >= spec.min_tokens:
                out[lang].append(LongDocument(doc_id, lang, group_key, text, len(offsets), list(offsets)))
    return dict(out)


def deep_sentences(doc: LongDocument, spec: LongDocSpec, others: Sequence[str]) -> list[tuple[int, int]]:
    """Up to `spec.queries_per_doc` query sentences of `doc` (seeded choice): prose sentences that start at or past
    token `deep_from`, end within `max_tokens` (the model's special tokens counted), and occur nowhere else —
    not in `others` (the other documents of the corpus, normalized) and not twice in `doc`."""
    offsets = doc.offsets
    first_char = offsets[spec.deep_from - 1][1]  # the body's token deep_from-1 is input position deep_from
    last_token = min(len(offsets), spec.max_tokens - 2)  # <s> ... </s> leave max_tokens-2 body tokens
    last_char = offsets[last_token - 1][1]
    candidates = [
        (s, e)
        for s, e in sentence_spans(doc.text)
        if s >= first_char and e <= last_char and _is_prose(doc.text[s:e], spec)
    ]
    random.Random(f"{spec.seed}:{doc.doc_id}").shuffle(candidates)
    chosen: list[tuple[int, int]] = []
    for s, e in candidates:
        if len(chosen) == spec.queries_per_doc:
            break
        if any(s < ce and cs < e for cs, ce in chosen):
            continue
        flat = _normalize(doc.text[s:e])
        rest = _normalize(doc.text[:s] + " " + doc.text[e:])
        if flat in rest or any(flat in other for other in others):
            continue  # a boilerplate sentence (shared by pages): it would not point at one document
        chosen.append((s, e))
    return sorted(chosen)


def _remove(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """`text` without the given spans (each replaced by one space)."""
    parts, pos = [], 0
    for s, e in sorted(spans):
        parts.append(text[pos:s])
        pos = e
    parts.append(text[pos:])
    return " ".join(p.strip(" ") for p in parts)


def _token_position(doc: LongDocument, char: int) -> int:
    """Input position (CLS = 0) of the token covering character `char`."""
    starts = [s for s, _ in doc.offsets]
    return int(np.searchsorted(starts, char, side="right"))  # body index + 1 for CLS


def _quantiles(values: Sequence[int]) -> dict[str, int]:
    if not values:
        return {}
    q = np.percentile(values, [0, 50, 90, 100])
    return {"min": int(q[0]), "p50": int(q[1]), "p90": int(q[2]), "max": int(q[3])}


def _recipe(spec: LongDocSpec) -> dict[str, Any]:
    """How a set or a training file was built (saved with it)."""
    return {"task": "inverse cloze: a deep sentence, removed from its document", **asdict(spec)}


def _queries(docs: list[LongDocument], spec: LongDocSpec, keep: set[str]) -> dict[str, list[tuple[int, int]]]:
    """Query spans per document id, for the documents whose id is in `keep`."""
    normalized = {d.doc_id: _normalize(d.text) for d in docs}
    out = {}
    for d in docs:
        if d.doc_id in keep:
            others = [t for i, t in normalized.items() if i != d.doc_id]
            spans = deep_sentences(d, spec, others)
            if spans:
                out[d.doc_id] = spans
    return out


def export_long_eval_sets(
    wh: Warehouse,
    out_dir: Path,
    tokenizer: Any,
    *,
    spec: LongDocSpec | None = None,
    which: str = "test",
    langs: Sequence[str] | None = None,
    min_queries: int = 5,
    split: SplitSpec | None = None,
    source: str | None = "manpages",
) -> list[dict]:
    """BEIR sets `long-<L>` under `out_dir` (and `index.json`); returns their meta.

    Each set's meta holds the length distribution of its corpus (tokens: min, median, p90, max) and the depth of
    its queries' sentences (input position of their first token), so the README's table is read off the export.
    """
    spec, split = spec or LongDocSpec(), split or SplitSpec()
    by_lang = load_long_documents(wh, tokenizer, spec, langs=langs, source=source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = []
    for lang, docs in sorted(by_lang.items()):
        if spec.max_corpus_per_language is not None:
            held = [d for d in docs if split.of(d.group_key) == which]
            rest = sorted(
                (d for d in docs if split.of(d.group_key) != which), key=lambda d: _rank("long", d.doc_id)
            )
            docs = held + rest[: max(0, spec.max_corpus_per_language - len(held))]
        query_docs = {d.doc_id for d in docs if split.of(d.group_key) == which}
        spans = _queries(docs, spec, query_docs)
        n_queries = sum(len(v) for v in spans.values())
        name = f"long-{lang}"
        if n_queries < min_queries:
            log.info("long eval set %s: %d queries (< %d): skipped", name, n_queries, min_queries)
            continue
        corpus, queries, qrels, depths = {}, {}, [], []
        for d in docs:
            corpus[d.doc_id] = _remove(d.text, spans.get(d.doc_id, []))
            for k, (s, e) in enumerate(spans.get(d.doc_id, [])):
                qid = f"{d.doc_id}:{k}"
                queries[qid] = _normalize(d.text[s:e])
                qrels.append((qid, d.doc_id))
                depths.append(_token_position(d, s))
        meta = {
            "name": name,
            "lang": lang,
            "query_lang": lang,
            "corpus_lang": lang,
            "kind": "long-document",
            "n_queries": len(queries),
            "n_corpus": len(corpus),
            "split": which,
            "source": source,
            "corpus_tokens": _quantiles([d.n_tokens for d in docs]),
            "query_docs_tokens": _quantiles([d.n_tokens for d in docs if d.doc_id in spans]),
            "query_position": _quantiles(depths),
            "recipe": _recipe(spec),
        }
        _write_beir(out_dir / name, corpus, queries, qrels, meta)
        index.append(meta)
    (out_dir / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False))
    log.info("long eval export %s: %d sets", out_dir, len(index))
    return index


def export_long_training(
    wh: Warehouse,
    out_path: Path,
    tokenizer: Any,
    *,
    spec: LongDocSpec | None = None,
    langs: Sequence[str] | None = None,
    negatives: int = 3,
    split: SplitSpec | None = None,
    source: str | None = "manpages",
    max_per_language: int | None = None,
) -> dict[str, int]:
    """FlagEmbedding lines (query sentence → its document minus the sentence) from the **train** split only, with
    `negatives` other long train documents of the same language as random negatives (the negatives stage can
    replace them). Writes `out_path` and `<out_path>.meta.json`; returns lines per language."""
    spec, split = spec or LongDocSpec(), split or SplitSpec()
    by_lang = load_long_documents(wh, tokenizer, spec, langs=langs, source=source)
    lines: list[Example] = []
    counts: dict[str, int] = {}
    for lang, docs in sorted(by_lang.items()):
        train = [d for d in docs if split.of(d.group_key) == "train"]
        spans = _queries(train, spec, {d.doc_id for d in train})
        items = [(d, k, s, e) for d in train for k, (s, e) in enumerate(spans.get(d.doc_id, []))]
        items.sort(key=lambda it: _rank("long-train", it[0].doc_id, str(it[1])))
        items = items[: max_per_language or None]
        rng = random.Random(f"{spec.seed}:{lang}")
        for d, _k, s, e in items:
            pool = [o for o in train if o.doc_id != d.doc_id]
            neg = [o.text for o in rng.sample(pool, min(negatives, len(pool)))]
            lines.append(Example(query=_normalize(d.text[s:e]), pos=[_remove(d.text, [(s, e)])], neg=neg))
        counts[lang] = len(items)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(lines, out_path)
    meta = {
        "lines": counts,
        "split": "train",
        "source": source,
        "negatives": negatives,
        "recipe": _recipe(spec),
        "warehouse": str(wh.path),
    }
    out_path.with_name(out_path.name + ".meta.json").write_text(
        json.dumps(meta, indent=2, ensure_ascii=False)
    )
    log.info("long training export %s: %s", out_path, counts)
    return counts


def export_long_run(
    wh: Warehouse,
    out_dir: Path,
    tokenizer: Any,
    *,
    spec: LongDocSpec | None = None,
    langs: Sequence[str] | None = None,
    max_train_per_language: int | None = None,
) -> dict:
    """What a retrain's long-document stage reads, under `out_dir`: the held-out sets (`eval/`, test split) and the
    training lines (`train.jsonl`, train split). Raises ValueError when either comes out empty."""
    out_dir = Path(out_dir)
    sets = export_long_eval_sets(wh, out_dir / "eval", tokenizer, spec=spec, langs=langs)
    if not sets:
        raise ValueError(
            f"{wh.path}: no long-document eval set (documents of >= {(spec or LongDocSpec()).min_tokens} tokens "
            f"in languages {list(langs or []) or 'any'}, with enough test-split queries): mine more man pages"
        )
    lines = export_long_training(
        wh,
        out_dir / "train.jsonl",
        tokenizer,
        spec=spec,
        langs=langs,
        max_per_language=max_train_per_language,
    )
    if not sum(lines.values()):
        raise ValueError(f"{wh.path}: no long-document training line from the train split")
    return {
        "eval_dir": str(out_dir / "eval"),
        "eval_sets": [s["name"] for s in sets],
        "train_file": str(out_dir / "train.jsonl"),
        "train_lines": lines,
    }
