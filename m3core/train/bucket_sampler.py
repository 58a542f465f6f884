"""Batch samplers: length-bucketed (the M3 recipe) and random (the baseline), both resumable and rank-aware.

Length buckets: examples are grouped by the token length of their longest passage into buckets (edges e.g.
0, 500, 1000, 2000, …, 8192); a batch holds examples of one bucket, so little of it is padding. Each bucket's
batch size comes from a token budget — `tokens_per_batch // (group_size × bucket upper edge)` passages' worth —
so short-text batches are large and 8192-token batches small, under the same memory.

Batch keys: examples with different keys never share a batch (`TrainDataset.batch_key`: whether in-batch
negatives apply, the group size, and optionally the source file — FlagEmbedding's `same_dataset_within_batch`).
In multi-process training every rank builds the same global batch list (same seed) and takes its slice of each
global batch, so all ranks draw the same bucket and key at every step: a decision made from the batch (gather
the other ranks' passages or not, the group size) is the same on every rank without any communication.

`drop_last`: a key's (and bucket's) incomplete last batch is dropped (FlagEmbedding's `dataloader_drop_last`),
so no step has fewer in-batch negatives than the others; `dropped` counts the examples an epoch leaves out.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Hashable, Iterator, Sequence

DEFAULT_EDGES = (0, 500, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8192)


class _ResumableBatches:
    """Shared epoch/position bookkeeping: iterate rank-local batches, resume from `state_dict()`."""

    def __init__(self, seed: int, world_size: int, rank: int, drop_last: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.seed, self.world_size, self.rank = seed, world_size, rank
        self.drop_last = drop_last
        self.epoch, self.position = 0, 0
        # examples the last `global_batches` call left out (drop_last, or unequal rank shares)
        self.dropped = 0

    def _chunks(self, members: list[int], size: int) -> list[list[int]]:
        """Consecutive batches of `size`; a short last batch is dropped (`drop_last`) or kept, trimmed to equal
        shares for every rank."""
        out = []
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            usable = 0 if self.drop_last and len(chunk) < size else len(chunk) - len(chunk) % self.world_size
            self.dropped += len(chunk) - usable
            if usable:
                out.append(chunk[:usable])
        return out

    def global_batches(self, epoch: int) -> list[list[int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def local(self, global_batch: list[int]) -> list[int]:
        """This rank's share of a global batch (equal shares; the batch holds world_size × per-rank items)."""
        per_rank = len(global_batch) // self.world_size
        return global_batch[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __len__(self) -> int:
        return len(self.global_batches(self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches(self.epoch)
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield self.local(batch)
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"sampler seed {state['seed']} in the checkpoint differs from the config's {self.seed}"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class LengthBucketBatchSampler(_ResumableBatches):
    """Batches of one length bucket each, sized by a token budget (see module docstring).

    Args:
        lengths: per example, tokens of its longest passage.
        group_size: passages per query (the group size of every key unless `keys` carry their own).
        tokens_per_batch: budget of tokens per rank per step: padded passages (length × G) plus the query.
        edges: bucket edges in tokens; lengths above the last edge fall in the last bucket.
        max_batch_size: cap on examples per rank per step.
        keys: per example, its batch key (`TrainDataset.batch_key`); None: one key for all.
        group_sizes: per example, its group size (equal within a key); None: `group_size` for all.
        query_tokens: tokens a query adds to the budget (its maximum length).
        drop_last: drop each (key, bucket)'s incomplete last batch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        group_size: int,
        tokens_per_batch: int,
        edges: Sequence[int] = DEFAULT_EDGES,
        max_batch_size: int = 256,
        seed: int = 0,
        world_size: int = 1,
        rank: int = 0,
        keys: Sequence[Hashable] | None = None,
        group_sizes: Sequence[int] | None = None,
        query_tokens: int = 0,
        drop_last: bool = False,
    ):
        super().__init__(seed, world_size, rank, drop_last)
        if list(edges) != sorted(set(edges)) or len(edges) < 2:
            raise ValueError(f"bucket edges must be increasing with at least two values, got {list(edges)}")
        self.edges = list(edges)
        self.group_size = group_size
        self.tokens_per_batch = tokens_per_batch
        self.max_batch_size = max_batch_size
        self.query_tokens = query_tokens
        self.group_sizes = group_sizes
        # (key, bucket) → members, in first-seen order so every rank builds the same list
        self.buckets: dict[tuple[Hashable, int], list[int]] = {}
        for i, n in enumerate(lengths):
            b = min(max(bisect.bisect_left(self.edges, n) - 1, 0), len(self.edges) - 2)
            self.buckets.setdefault((None if keys is None else keys[i], b), []).append(i)

    def batch_size(self, bucket: int, group_size: int | None = None) -> int:
        """Examples per rank for a bucket: the token budget over a query and its group at the bucket's edge."""
        per_example = (group_size or self.group_size) * self.edges[bucket + 1] + self.query_tokens
        return max(1, min(self.max_batch_size, self.tokens_per_batch // per_example))

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}/{epoch}")
        batches, self.dropped = [], 0
        for (_, b), members in self.buckets.items():
            members = members[:]
            rng.shuffle(members)
            size = self.batch_size(b, None if self.group_sizes is None else self.group_sizes[members[0]])
            batches.extend(self._chunks(members, size * self.world_size))
        rng.shuffle(batches)
        return batches


class RandomBatchSampler(_ResumableBatches):
    """The baseline: shuffled fixed-size batches regardless of length (padded to their longest member)."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        world_size: int = 1,
        rank: int = 0,
        keys: Sequence[Hashable] | None = None,
        drop_last: bool = False,
    ):
        super().__init__(seed, world_size, rank, drop_last)
        self.n, self.batch_size = n, batch_size
        self.keys = keys

    def global_batches(self, epoch: int) -> list[list[int]]:
        order = list(range(self.n))
        rng = random.Random(f"{self.seed}/{epoch}")
        rng.shuffle(order)
        by_key: dict[Hashable, list[int]] = {}
        for i in order:
            by_key.setdefault(None if self.keys is None else self.keys[i], []).append(i)
        self.dropped = 0
        batches = [
            b for members in by_key.values() for b in self._chunks(members, self.batch_size * self.world_size)
        ]
        if len(by_key) > 1:  # one key: the order is already random
            rng.shuffle(batches)
        return batches
