"""Batch samplers: length-bucketed (the M3 recipe) and random (the baseline), both resumable and rank-aware.

Length buckets: examples are grouped by the token length of their longest passage into buckets (edges e.g.
0, 500, 1000, 2000, …, 8192); a batch holds examples of one bucket, so little of it is padding. Each bucket's
batch size comes from a token budget — `tokens_per_batch // (group_size × bucket upper edge)` passages' worth —
so short-text batches are large and 8192-token batches small, under the same memory. In multi-process
training every rank builds the same global batch list (same seed) and takes its slice of each global batch, so
all ranks draw the same bucket at every step.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence

DEFAULT_EDGES = (0, 500, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8192)


class _ResumableBatches:
    """Shared epoch/position bookkeeping: iterate rank-local batches, resume from `state_dict()`."""

    def __init__(self, seed: int, world_size: int, rank: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.seed, self.world_size, self.rank = seed, world_size, rank
        self.epoch, self.position = 0, 0

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
        group_size: passages per query.
        tokens_per_batch: budget of passage tokens per rank per step (padded length × passages).
        edges: bucket edges in tokens; lengths above the last edge fall in the last bucket.
        max_batch_size: cap on examples per rank per step.
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
    ):
        super().__init__(seed, world_size, rank)
        if list(edges) != sorted(set(edges)) or len(edges) < 2:
            raise ValueError(f"bucket edges must be increasing with at least two values, got {list(edges)}")
        self.edges = list(edges)
        self.group_size = group_size
        self.tokens_per_batch = tokens_per_batch
        self.max_batch_size = max_batch_size
        self.buckets: list[list[int]] = [[] for _ in range(len(self.edges) - 1)]
        for i, n in enumerate(lengths):
            b = min(max(bisect.bisect_left(self.edges, n) - 1, 0), len(self.buckets) - 1)
            self.buckets[b].append(i)

    def batch_size(self, bucket: int) -> int:
        """Examples per rank for a bucket: the token budget over the bucket's padded group size."""
        upper = self.edges[bucket + 1]
        return max(1, min(self.max_batch_size, self.tokens_per_batch // (self.group_size * upper)))

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}/{epoch}")
        batches = []
        for b, members in enumerate(self.buckets):
            members = members[:]
            rng.shuffle(members)
            batches.extend(_chunks(members, self.batch_size(b) * self.world_size, self.world_size))
        rng.shuffle(batches)
        return batches


class RandomBatchSampler(_ResumableBatches):
    """The baseline: shuffled fixed-size batches regardless of length (padded to their longest member)."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, world_size: int = 1, rank: int = 0):
        super().__init__(seed, world_size, rank)
        self.n, self.batch_size = n, batch_size

    def global_batches(self, epoch: int) -> list[list[int]]:
        order = list(range(self.n))
        random.Random(f"{self.seed}/{epoch}").shuffle(order)
        return _chunks(order, self.batch_size * self.world_size, self.world_size)


def _chunks(members: list[int], size: int, world_size: int) -> list[list[int]]:
    """Consecutive batches of `size`; a short last batch is kept, trimmed to equal shares for every rank."""
    out = []
    for start in range(0, len(members), size):
        chunk = members[start : start + size]
        usable = len(chunk) - len(chunk) % world_size
        if usable:
            out.append(chunk[:usable])
    return out
