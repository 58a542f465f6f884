"""JSONL and Parquet files of pairs or documents, with a field mapping.

A row becomes pairs when the mapping's `query` field is present (one pair per positive when the field
holds a list), else a document from `title`/`text`. Malformed JSON, invalid UTF-8, non-object rows and
missing fields are rejected with the file and line (or row) number.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3core.data.langid import normalize_lang
from m3core.data.records import PAIR_KINDS, Document, Pair, Record, Rejected


@dataclass(frozen=True)
class FieldMap:
    """Which input field holds what. `lang` fields override the source's declared language."""

    query: str = "query"
    positive: str = "positive"
    title: str = "title"
    text: str = "text"
    lang: str = "lang"
    query_lang: str = "query_lang"
    kind: str = "kind"
    group: str = "group"

    @classmethod
    def parse(cls, spec: str | Mapping[str, str] | None) -> FieldMap:
        """From `"query=question,positive=answer"` or a dict; unknown keys are an error."""
        if spec is None:
            return cls()
        if isinstance(spec, str):
            items = [kv.split("=", 1) for kv in spec.split(",") if kv.strip()]
            if any(len(kv) != 2 for kv in items):
                raise ValueError(f"field map {spec!r}: expected key=field[,key=field...]")
            spec = {k.strip(): v.strip() for k, v in items}
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"field map: unknown keys {sorted(unknown)}; known: {list(cls.__dataclass_fields__)}"
            )
        return cls(**spec)


@dataclass
class RowMapper:
    """Turns one mapped row (dict) into records; shared by the file and Hugging Face sources."""

    name: str
    fields: FieldMap = field(default_factory=FieldMap)
    lang: str | None = None  # declared language when rows carry none (None: detect)
    kind: str = "question-answer"

    def __post_init__(self) -> None:
        if self.kind not in PAIR_KINDS:
            raise ValueError(f"source {self.name}: kind {self.kind!r} is not one of {PAIR_KINDS}")

    def _text(self, value: Any) -> str | None:
        if isinstance(value, Mapping):  # e.g. MIRACL passages {"docid", "title", "text"}
            value = value.get(self.fields.text)
        return value if isinstance(value, str) else None

    def rows_to_records(self, row: Any, location: str) -> Iterator[Record]:
        f = self.fields
        if not isinstance(row, Mapping):
            yield Rejected(
                self.name, location, "not-an-object", f"row is {type(row).__name__}", content=str(row)[:500]
            )
            return
        for key in (f.lang, f.query_lang):
            value = row.get(key)
            if value is not None and not isinstance(value, str):  # a language tag given, but not as text
                yield Rejected(
                    self.name, location, "bad-lang", f"{key!r} is {type(value).__name__}, not a language tag",
                    content=json.dumps(row, ensure_ascii=False, default=str)[:500],
                )  # fmt: skip
                return
        lang = row.get(f.lang) or self.lang
        lang = normalize_lang(lang) if isinstance(lang, str) and lang else "und"
        query_lang = row.get(f.query_lang)
        query_lang = normalize_lang(query_lang) if isinstance(query_lang, str) and query_lang else lang
        group = str(row.get(f.group) or "")
        if f.query in row:
            kind = row.get(f.kind) or self.kind
            if kind not in PAIR_KINDS:
                yield Rejected(self.name, location, "bad-kind", f"kind {kind!r}", lang)
                return
            query, positives = row.get(f.query), row.get(f.positive)
            if not isinstance(query, str):
                yield Rejected(self.name, location, "missing-field", f"{f.query!r} is not a string", lang)
                return
            if positives is None:
                yield Rejected(self.name, location, "missing-field", f"no {f.positive!r}", lang, query[:500])
                return
            positives = positives if isinstance(positives, list) else [positives]
            for i, pos in enumerate(positives):
                loc = f"{location}[{i}]" if len(positives) > 1 else location
                text = self._text(pos)
                if text is None:
                    yield Rejected(
                        self.name, loc, "missing-field", f"{f.positive!r} is not text", lang, query[:500]
                    )
                    continue
                yield Pair(kind, query, text, lang, query_lang, self.name, loc, group or query)
        elif f.text in row:
            text, title = row.get(f.text), row.get(f.title) or ""
            if not isinstance(text, str) or not isinstance(title, str):
                yield Rejected(
                    self.name, location, "missing-field", f"{f.text!r}/{f.title!r} not strings", lang
                )
                return
            yield Document(title, text, lang, self.name, location, group or title)
        else:
            yield Rejected(
                self.name,
                location,
                "missing-field",
                f"neither {f.query!r} nor {f.text!r} in row",
                lang,
                json.dumps(row, ensure_ascii=False, default=str)[:500],
            )


@dataclass
class _FileSource:
    """Files read through a `RowMapper`: the name and the units (the files, which must exist) are shared."""

    paths: list[Path]
    mapper: RowMapper

    @property
    def name(self) -> str:
        return self.mapper.name

    def units(self) -> list[Path]:
        for p in self.paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"source {self.name}: no such file {p}")
        return [Path(p) for p in self.paths]


@dataclass
class JsonlSource(_FileSource):
    """One or more JSONL files."""

    def read(self, unit: Path) -> Iterator[Record]:
        with open(unit, "rb") as fh:  # bytes: a bad line must not stop the file
            for lineno, raw in enumerate(fh, start=1):
                loc = f"{unit}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    yield Rejected(
                        self.name, loc, "invalid-utf8", str(err), content=raw[:500].decode("utf-8", "replace")
                    )
                    continue
                if not line.strip():
                    continue  # blank lines are layout, not records
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    yield Rejected(self.name, loc, "malformed-json", str(err), content=line[:500])
                    continue
                yield from self.mapper.rows_to_records(row, loc)


@dataclass
class ParquetSource(_FileSource):
    """One or more Parquet files, read in record batches."""

    batch_size: int = 10_000

    def read(self, unit: Path) -> Iterator[Record]:
        import pyarrow.parquet as pq

        row_no = 0
        for batch in pq.ParquetFile(unit).iter_batches(batch_size=self.batch_size):
            for row in batch.to_pylist():
                yield from self.mapper.rows_to_records(row, f"{unit}#row={row_no}")
                row_no += 1
