"""Training data: FlagEmbedding JSONL files (or a `datasets.Dataset`) → validated examples → per-step groups.

A line is `{"query": str, "pos": [str, ...], "neg": [str, ...], "pos_scores"?: [float], "neg_scores"?: [float],
"prompt"?: str, "type"?: str}` (defined, with its reader and writer, in `m3core.data.examples`). Each training
example draws one positive and `group_size - 1` negatives (with replacement when there are too few), seeded by
(seed, epoch, index) so a resumed run draws the same groups.
Dataset types follow FlagEmbedding (`flagembedding_types`, default on): `only_1neg` examples form groups of 2,
`symmetric_class` groups of min(negatives + 1, G); `symmetric_sts` / `symmetric_clustering` passages take the
query's prompt (both sides are the same kind of text). Examples of a no-in-batch type (`NO_IN_BATCH_TYPES`) or
from a file or directory whose name ends in `no_in_batch_neg` (FlagEmbedding's convention) see only their own
group. `batch_key(i)` says which examples may share a batch (the samplers never mix keys).
A malformed line is an error `file:line: reason`, or — when the user asks to skip bad lines — skipped and
counted in `TrainDataset.skipped` (the run summary reports it), never silently.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# The example and its JSONL line are defined once, in `m3core.data.examples` (importable from here as before).
from m3core.data.examples import NO_IN_BATCH_TYPES, Example, parse_example, read_jsonl  # noqa: F401

SYMMETRIC_PROMPT_TYPES = frozenset({"symmetric_sts", "symmetric_clustering"})
NO_IN_BATCH_SUFFIX = "no_in_batch_neg"


def source_file(ex: Example) -> str:
    """The file an example was read from (`source` is `file:line`; '' for in-memory examples)."""
    return ex.source.rsplit(":", 1)[0] if ex.source else ""


@functools.cache  # one answer per training file, asked for every example
def _no_in_batch_path(path: str) -> bool:
    """FlagEmbedding's convention: a file `*no_in_batch_neg.jsonl` or a directory `*no_in_batch_neg/`."""
    if not path:
        return False
    p = Path(path)
    return p.stem.endswith(NO_IN_BATCH_SUFFIX) or p.parent.name.endswith(NO_IN_BATCH_SUFFIX)


@dataclass
class Group:
    """One training example as used in a step: the query and its G passages (positive first)."""

    query: str
    passages: list[str]
    teacher_scores: list[float] | None
    in_batch_negatives: bool

    @property
    def group_size(self) -> int:
        return len(self.passages)


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
        flagembedding_types: bool = True,
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
        self.flagembedding_types = flagembedding_types
        self.in_batch = [ex.in_batch_negatives and not _no_in_batch_path(source_file(ex)) for ex in examples]

    def example_group_size(self, index: int) -> int:
        """G of example `index`: `group_size`, or its type's (FlagEmbedding's rule) with `flagembedding_types`."""
        ex = self.examples[index]
        if self.flagembedding_types and ex.type == "only_1neg":
            return min(2, self.group_size)
        if self.flagembedding_types and ex.type == "symmetric_class":
            return min(len(ex.neg) + 1, self.group_size)
        return self.group_size

    def batch_key(self, index: int, by_dataset: bool = False) -> tuple:
        """Examples may share a batch only when their keys are equal: same in-batch-negative rule and group size
        (so every rank of a step agrees on both), and with `by_dataset` the same source file."""
        key = (self.in_batch[index], self.example_group_size(index))
        return (*key, source_file(self.examples[index])) if by_dataset else key

    @classmethod
    def from_jsonl(
        cls, paths: str | Path | list[str | Path], skip_bad_lines: bool = False, **kwargs
    ) -> TrainDataset:
        """Every example of the given files/directories (`m3core.data.examples.read_jsonl`)."""
        examples, skipped = read_jsonl(paths, skip_bad_lines)
        return cls(examples, skipped=skipped, **kwargs)

    @classmethod
    def from_hf(cls, dataset, **kwargs) -> TrainDataset:
        """From a `datasets.Dataset` with FlagEmbedding's columns."""
        return cls([parse_example(dict(r), f"dataset[{i}]") for i, r in enumerate(dataset)], **kwargs)

    def __len__(self) -> int:
        return len(self.examples)

    def query_prompt(self, ex: Example) -> str:
        """The prefix of `ex`'s query: its own `prompt`, else the model's query instruction ('' for none)."""
        return (ex.prompt if ex.prompt is not None else self.query_instruction) or ""

    def query_text(self, ex: Example) -> str:
        return self.query_prompt(ex) + ex.query

    def group(self, index: int, epoch: int) -> Group:
        """Example `index` as drawn in `epoch`: one positive, `group_size - 1` negatives (seeded)."""
        ex = self.examples[index]
        rng = random.Random(f"{self.seed}/{epoch}/{index}")  # str seeds are stable across processes
        p = rng.randrange(len(ex.pos))
        n_neg = self.example_group_size(index) - 1
        if n_neg == 0:
            negs = []
        elif not ex.neg:
            raise ValueError(
                f"{ex.source or f'example {index}'}: no negatives, but group_size={n_neg + 1} needs {n_neg}"
            )
        elif len(ex.neg) >= n_neg:
            negs = rng.sample(range(len(ex.neg)), n_neg)
        else:
            negs = [rng.randrange(len(ex.neg)) for _ in range(n_neg)]
        teacher = None
        if ex.pos_scores is not None and ex.neg_scores is not None:
            teacher = [ex.pos_scores[p]] + [ex.neg_scores[i] for i in negs]
        if ex.type in SYMMETRIC_PROMPT_TYPES and self.flagembedding_types:
            prefix = self.query_prompt(ex)
        else:
            prefix = self.passage_instruction or ""
        passages = [prefix + t for t in [ex.pos[p]] + [ex.neg[i] for i in negs]]
        return Group(self.query_text(ex), passages, teacher, self.in_batch[index])
