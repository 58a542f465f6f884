"""Evaluation sets in the BEIR layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``, ``meta.json``.

A directory holding ``corpus.jsonl`` is one set; any other directory is a parent whose sub-directories
are sets (the data layer's `m3 export` writes one per language / language pair).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """One retrieval benchmark: corpus ``{doc_id: text}``, queries ``{query_id: text}``, qrels, meta."""

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def label(self) -> str:
        """What tables and plots call this set: the language, or query→corpus languages if cross-lingual."""
        m = self.meta
        if m.get("kind") == "cross-lingual" and m.get("query_lang") and m.get("corpus_lang"):
            return f"{m['query_lang']}→{m['corpus_lang']}"
        return str(m.get("lang") or self.name)


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """`(line number, row)` of a BEIR JSONL file; a bad line or a repeated `_id` is a ValueError naming it."""
    rows = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or "_id" not in row:
                raise ValueError(f"{path}:{n}: expected an object with an '_id' field")
            rid = str(row["_id"])
            if rid in seen:
                raise ValueError(f"{path}:{n}: _id {rid!r} repeats line {seen[rid]} (ids must be unique)")
            seen[rid] = n
            rows.append((n, row))
    return rows


def load_eval_set(directory: str | Path, split: str = "test") -> EvalSet:
    """Read one BEIR set; passages are ``title + " " + text`` when a title is given (BEIR's convention)."""
    d = Path(directory)
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (d / name).exists():
            raise FileNotFoundError(f"eval set {d}: missing {name} (expected the BEIR layout)")
    corpus = {}
    for _, row in _read_jsonl(d / "corpus.jsonl"):
        title, text = (row.get("title") or "").strip(), row.get("text") or ""
        corpus[str(row["_id"])] = f"{title} {text}".strip() if title else text
    queries, query_lines = {}, {}
    for n, row in _read_jsonl(d / "queries.jsonl"):
        queries[str(row["_id"])], query_lines[str(row["_id"])] = str(row.get("text") or ""), n
    qrels: dict[str, dict[str, float]] = {}
    with (d / f"qrels/{split}.tsv").open(encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["query-id", "corpus-id"]:
            raise ValueError(f"{d}/qrels/{split}.tsv: expected header 'query-id<TAB>corpus-id<TAB>score'")
        for n, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) < 3:
                raise ValueError(f"{d}/qrels/{split}.tsv:{n}: expected 3 tab-separated fields, got {row}")
            qid, did = row[0], row[1]
            try:
                score = float(row[2])
            except ValueError:
                raise ValueError(
                    f"{d}/qrels/{split}.tsv:{n}: score {row[2]!r} of query {qid!r} is not a number"
                ) from None
            if qid not in queries:
                raise ValueError(f"{d}/qrels/{split}.tsv:{n}: query {qid!r} is not in queries.jsonl")
            if did not in corpus:
                raise ValueError(f"{d}/qrels/{split}.tsv:{n}: document {did!r} is not in corpus.jsonl")
            qrels.setdefault(qid, {})[did] = score
    meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").exists() else {}
    # Queries nobody judged cannot be scored; evaluation uses only the judged ones.
    unjudged = len(set(queries) - set(qrels))
    if unjudged:
        log.info(
            "eval set %s: %d of %d queries have no qrels and are skipped", d.name, unjudged, len(queries)
        )
    queries = {q: t for q, t in queries.items() if q in qrels}
    if not queries:
        raise ValueError(f"eval set {d}: no query has qrels in qrels/{split}.tsv (nothing to score)")
    for qid, text in queries.items():
        if not text.strip():
            raise ValueError(f"{d}/queries.jsonl:{query_lines[qid]}: query {qid!r} has an empty text")
    return EvalSet(meta.get("name") or d.name, corpus, queries, qrels, meta, d)


def load_eval_sets(
    path: str | Path, split: str = "test", failures: list[dict[str, str]] | None = None
) -> list[EvalSet]:
    """One set (``path`` has corpus.jsonl) or every set directly under ``path``, sorted by name.

    With `failures` (a list), a set that does not load is recorded there (`{"name", "path", "reason"}`) and the
    others are still returned; without it, the first bad set raises.
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"eval set {p}: not a directory")
    if (p / "corpus.jsonl").exists():
        subdirs = [p]
    else:
        subdirs = sorted(c for c in p.iterdir() if (c / "corpus.jsonl").exists())
    if not subdirs:
        raise FileNotFoundError(f"eval set {p}: no corpus.jsonl in it or in its sub-directories")
    sets = []
    for c in subdirs:
        try:
            sets.append(load_eval_set(c, split))
        except (ValueError, OSError) as err:
            if failures is None:
                raise
            log.warning("eval set %s: skipped: %s", c.name, err)
            failures.append({"name": c.name, "path": str(c), "reason": str(err)})
    return sets


def write_eval_set(directory: str | Path, es: EvalSet) -> Path:
    """Write ``es`` in the BEIR layout (used by tests and by the man-page fallback set builder)."""
    d = Path(directory)
    (d / "qrels").mkdir(parents=True, exist_ok=True)
    with (d / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for did, text in es.corpus.items():
            f.write(json.dumps({"_id": did, "title": "", "text": text}, ensure_ascii=False) + "\n")
    with (d / "queries.jsonl").open("w", encoding="utf-8") as f:
        for qid, text in es.queries.items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with (d / "qrels/test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, rels in es.qrels.items():
            for did, score in rels.items():
                f.write(f"{qid}\t{did}\t{int(score) if float(score).is_integer() else score}\n")
    (d / "meta.json").write_text(json.dumps({"name": es.name, **es.meta}, ensure_ascii=False))
    return d
