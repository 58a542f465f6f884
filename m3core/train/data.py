"""Training data: FlagEmbedding JSONL files (or a `datasets.Dataset`) → validated examples → per-step groups.

A line is `{"query": str, "pos": [str, ...], "neg": [str, ...], "pos_scores"?: [float], "neg_scores"?: [float],
"prompt"?: str, "type"?: str}`. Each training example draws one positive and `group_size - 1` negatives (with
replacement when there are too few), seeded by (seed, epoch, index) so a resumed run draws the same groups.
A malformed line is an error `file:line: reason`, or — when the user asks to skip bad lines — skipped and
counted in `TrainDataset.skipped` (the run summary reports it), never silently.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# `type` values whose examples must not see other queries' passages as negatives (FlagEmbedding's convention:
# classification / clustering data, where another query's positive may be this query's positive too).
NO_IN_BATCH_TYPES = frozenset(
    {"symmetric_class", "symmetric_clustering", "only_1neg", "classification", "clustering"}
)


@dataclass
class Example:
    query: str
    pos: list[str]
    neg: list[str]
    pos_scores: list[float] | None = None
    neg_scores: list[float] | None = None
    prompt: str | None = None
    type: str | None = None
    source: str = ""
    lang: str | None = None

    @property
    def in_batch_negatives(self) -> bool:
        return self.type not in NO_IN_BATCH_TYPES


@dataclass
class Group:
    """One training example as used in a step: the query and its G passages (positive first)."""

    query: str
    passages: list[str]
    teacher_scores: list[float] | None
    in_batch_negatives: bool


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
    """Validate one JSON record; raises ValueError with the reason."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    unknown = set(record) - {
        "query",
        "pos",
        "neg",
        "pos_scores",
        "neg_scores",
        "prompt",
        "type",
        "lang",
        "id",
    }
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
    return Example(query, pos, neg, pos_scores, neg_scores, prompt, kind, source, lang)


def _jsonl_files(paths: list[str | Path]) -> list[Path]:
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


class TrainDataset:
    """All examples of the given files/directories (or a `datasets.Dataset`), validated up front."""

    def __init__(
        self,
        examples: list[Example],
        group_size: int = 8,
        query_instruction: str | None = None,
        seed: int = 42,
        skipped: Counter | None = None,
        passage_instruction: str | None = None,
    ):
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if not examples:
            raise ValueError("the training data has no examples")
        self.examples = examples
        self.group_size = group_size
        self.query_instruction = query_instruction
        self.passage_instruction = passage_instruction  # prefix for every passage (e5-style "passage: ")
        self.seed = seed
        self.skipped = skipped or Counter()

    @classmethod
    def from_jsonl(
        cls, paths: str | Path | list[str | Path], skip_bad_lines: bool = False, **kwargs
    ) -> TrainDataset:
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        examples: list[Example] = []
        skipped: Counter = Counter()
        for path in _jsonl_files(paths):
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
        return cls(examples, skipped=skipped, **kwargs)

    @classmethod
    def from_hf(cls, dataset, **kwargs) -> TrainDataset:
        """From a `datasets.Dataset` with FlagEmbedding's columns."""
        return cls([parse_example(dict(r), f"dataset[{i}]") for i, r in enumerate(dataset)], **kwargs)

    def __len__(self) -> int:
        return len(self.examples)

    def query_text(self, ex: Example) -> str:
        prompt = ex.prompt if ex.prompt is not None else self.query_instruction
        return f"{prompt}{ex.query}" if prompt else ex.query

    def group(self, index: int, epoch: int) -> Group:
        """Example `index` as drawn in `epoch`: one positive, `group_size - 1` negatives (seeded)."""
        ex = self.examples[index]
        rng = random.Random(f"{self.seed}/{epoch}/{index}")  # str seeds are stable across processes
        p = rng.randrange(len(ex.pos))
        n_neg = self.group_size - 1
        if n_neg == 0:
            negs = []
        elif not ex.neg:
            raise ValueError(
                f"{ex.source or f'example {index}'}: no negatives, but group_size={self.group_size} needs {n_neg}"
            )
        elif len(ex.neg) >= n_neg:
            negs = rng.sample(range(len(ex.neg)), n_neg)
        else:
            negs = [rng.randrange(len(ex.neg)) for _ in range(n_neg)]
        teacher = None
        if ex.pos_scores is not None and ex.neg_scores is not None:
            teacher = [ex.pos_scores[p]] + [ex.neg_scores[i] for i in negs]
        prefix = self.passage_instruction or ""
        passages = [prefix + t for t in [ex.pos[p]] + [ex.neg[i] for i in negs]]
        return Group(self.query_text(ex), passages, teacher, ex.in_batch_negatives)
