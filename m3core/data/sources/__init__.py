"""Typed sources: each turns one kind of input into `Pair` / `Document` / `Rejected` records.

A source splits its input into picklable work units (files, chunks) that the pipeline reads in worker
processes; `read(unit)` yields records with provenance (source name + location).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from m3core.data.records import Record


@runtime_checkable
class Source(Protocol):
    """What the pipeline needs from a source."""

    name: str

    def units(self) -> Iterable[Any]:
        """Independent, picklable pieces of work (e.g. file paths)."""
        ...

    def read(self, unit: Any) -> Iterator[Record]:
        """The records of one unit, in input order."""
        ...
