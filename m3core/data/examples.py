"""The training example and its FlagEmbedding JSONL line, defined once: `Example`, `parse_example` (one line →
validated `Example`), `read_jsonl` (files → examples, `file:line: reason` errors) and `write_jsonl`.

Every producer of training lines writes through `write_jsonl` (the warehouse export `m3 export`, the synthetic
queries `m3 synth export`, hard-negative mining `m3 negatives`) and every consumer reads through `read_jsonl`
(training, mining), so the format has one definition. A line is

    {"query": str, "pos": [str, ...], "neg": [str, ...], "pos_scores"?: [float], "neg_scores"?: [float],
     "prompt"?: str, "type"?: str}

written in that key order, UTF-8 with non-ASCII characters as they are (`ensure_ascii=False`), one per line.
On read `neg` may be absent (= []) and `lang` / `id` are accepted too (`lang` is kept, `id` ignored).

This module is light (the standard library only): the data layer, synth, mining and training all import it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# `type` values whose examples must not see other queries' passages as negatives (FlagEmbedding's convention:
# classification / clustering data, where another query's positive may be this query's positive too).
NO_IN_BATCH_TYPES = frozenset(
    {"symmetric_class", "symmetric_clustering", "only_1neg", "classification", "clustering"}
)
# The fields a line may have.
LINE_FIELDS = ("query", "pos", "neg", "pos_scores", "neg_scores", "prompt", "type", "lang", "id")


@dataclass
class Example:
    """A training query with its positives, negatives and FlagEmbedding's optional fields.

    The line's fields come first; then what is never written to a line: `source` (where it was read,
    `file:line`; not compared), and from mining `neg_ranks` (1-based rank of each negative, None = random
    top-up) and `pair_ids` (the warehouse pairs it came from).
    """

    query: str
    pos: list[str]
    neg: list[str] = field(default_factory=list)
    pos_scores: list[float] | None = None
    neg_scores: list[float] | None = None
    prompt: str | None = None
    type: str | None = None
    lang: str | None = None
    source: str = field(default="", compare=False)
    neg_ranks: list[int | None] = field(default_factory=list)
    pair_ids: list[str] = field(default_factory=list)

    @property
    def in_batch_negatives(self) -> bool:
        return self.type not in NO_IN_BATCH_TYPES

    def to_flag_json(self) -> dict[str, Any]:
        """The FlagEmbedding training line (as a dict, in the line's key order).

        >>> Example("q", ["p"], type="t").to_flag_json()
        {'query': 'q', 'pos': ['p'], 'neg': [], 'type': 't'}
        """
        out: dict[str, Any] = {"query": self.query, "pos": self.pos, "neg": self.neg}
        if self.pos_scores is not None:
            out["pos_scores"], out["neg_scores"] = self.pos_scores, self.neg_scores
        if self.prompt is not None:
            out["prompt"] = self.prompt
        if self.type is not None:
            out["type"] = self.type
        return out


def _check_str_list(value: Any, field: str, allow_empty: bool) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"'{field}' must be a list of strings, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"'{field}' is empty")
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"'{field}'[{i}] must be a non-empty string, got {v!r:.60}")
    return value


def _check_scores(value: Any, field: str, n: int) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n or not all(isinstance(x, (int, float)) for x in value):
        raise ValueError(f"'{field}' must be a list of {n} numbers (one per passage)")
    return [float(x) for x in value]


def parse_example(record: Any, source: str = "") -> Example:
    """Validate one JSON record (a parsed line); raises ValueError with the reason."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    unknown = set(record) - set(LINE_FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    query = record.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError("'query' must be a non-empty string")
    pos = _check_str_list(record.get("pos"), "pos", allow_empty=False)
    neg = _check_str_list(record.get("neg", []), "neg", allow_empty=True)
    pos_scores = _check_scores(record.get("pos_scores"), "pos_scores", len(pos))
    neg_scores = _check_scores(record.get("neg_scores"), "neg_scores", len(neg))
    if (pos_scores is None) != (neg_scores is None):
        raise ValueError("'pos_scores' and 'neg_scores' must be given together")
    prompt = record.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError("'prompt' must be a string")
    kind = record.get("type")
    if kind is not None and not isinstance(kind, str):
        raise ValueError("'type' must be a string")
    lang = record.get("lang")
    if lang is not None and not isinstance(lang, str):
        raise ValueError("'lang' must be a string")
    return Example(
        query=query, pos=pos, neg=neg, pos_scores=pos_scores, neg_scores=neg_scores, prompt=prompt, type=kind,
        lang=lang, source=source,
    )  # fmt: skip


def jsonl_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files of ``paths``: a file as is, a directory's ``*.jsonl`` then ``*.json`` (recursive, sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.jsonl")) + sorted(p.rglob("*.json"))
            if not found:
                raise FileNotFoundError(f"{p}: no .jsonl/.json files in this directory")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such training data file or directory")
    return files


def read_jsonl(
    paths: str | Path | Iterable[str | Path], skip_bad_lines: bool = False
) -> tuple[list[Example], Counter]:
    """Every example of the given files/directories, validated line by line, and the skipped lines' reasons.

    A bad line is an error ``file:line: reason``, or — with ``skip_bad_lines`` — skipped, logged and counted
    in the returned Counter (reason → lines). Blank lines are ignored.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    examples: list[Example] = []
    skipped: Counter = Counter()
    for path in jsonl_files(paths):
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    examples.append(parse_example(json.loads(raw.decode("utf-8")), where))
                except UnicodeDecodeError:
                    reason = "invalid UTF-8"
                except json.JSONDecodeError as err:
                    reason = f"invalid JSON ({err.msg})"
                except ValueError as err:
                    reason = str(err)
                else:
                    continue
                if not skip_bad_lines:
                    raise ValueError(f"{where}: {reason}")
                skipped[reason] += 1
                logger.warning("skipping %s: %s", where, reason)
    if skipped:
        logger.warning("skipped %d bad lines: %s", sum(skipped.values()), dict(skipped))
    return examples, skipped


def write_jsonl(examples: Iterable[Example], path: str | Path) -> Path:
    """Write ``examples`` as FlagEmbedding lines (`Example.to_flag_json`) to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_flag_json(), ensure_ascii=False) + "\n")
    return path
