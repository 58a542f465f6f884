"""Hugging Face datasets (`datasets.load_dataset`): name/config/split plus a field mapping.

The production path (MIRACL, Mr.TyDi, MLDR, NLLB...). Local JSON/Parquet work the same way through the
`json`/`parquet` builders with `data_files`, which is how the tests exercise it offline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from m3core.data.records import Record
from m3core.data.sources.files import RowMapper


@dataclass
class HFDatasetSource:
    """`load_dataset(path, config, split=split, data_files=...)`, rows mapped by `mapper`.

    Rows are read in shards of `shard_rows` so the pipeline can spread them over workers.
    """

    path: str
    mapper: RowMapper
    config: str | None = None
    split: str = "train"
    data_files: list[str] | None = None
    shard_rows: int = 20_000
    max_rows: int | None = None

    @property
    def name(self) -> str:
        return self.mapper.name

    def _load(self):
        import datasets

        ds = datasets.load_dataset(self.path, self.config, split=self.split, data_files=self.data_files)
        return ds.select(range(min(self.max_rows, len(ds)))) if self.max_rows else ds

    def units(self) -> list[tuple[int, int]]:
        n = len(self._load())
        return [(start, min(start + self.shard_rows, n)) for start in range(0, n, self.shard_rows)]

    def read(self, unit: tuple[int, int]) -> Iterator[Record]:
        start, stop = unit
        ds = self._load().select(range(start, stop))  # cached arrow files: cheap to reopen per shard
        where = f"{self.path}{':' + self.config if self.config else ''}[{self.split}]"
        for i, row in enumerate(ds, start=start):
            yield from self.mapper.rows_to_records(row, f"{where}#row={i}")
