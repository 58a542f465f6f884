"""`SourcesSpec`: which inputs a mining run reads, typed once for the `m3 mine` flags and the `mine_pairs` flow.

`build()` turns it into the `Source` objects the pipeline reads, in a fixed order (man pages last: their
cross-lingual pairs are derived after the monolingual ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from m3core.data.sources.gettext import DEFAULT_GLOBS


class SourcesSpec(BaseModel):
    """The sources of one mining run; every kind is off unless asked for."""

    model_config = ConfigDict(extra="forbid")

    gettext: bool = Field(False, description="gettext catalogs (translation pairs)")
    gettext_globs: list[str] = Field(default_factory=lambda: list(DEFAULT_GLOBS))
    max_catalogs_per_language: int | None = Field(
        None, ge=1, description="a stable sample of catalogs per language (None: all)"
    )
    manpages: bool = Field(False, description="translated man pages (long documents, title→body pairs)")
    manpage_root: str = "/usr/share/man"
    manpage_languages: list[str] = Field(default_factory=list, description="empty: every installed language")
    english: Literal["translated", "all", "none"] = Field(
        "translated", description="which English man pages: those with a translation here, all, or none"
    )
    max_per_language: int | None = Field(
        None,
        ge=1,
        description="new pairs per source and language pair, and man pages per language (None: all)",
    )
    docs: str | None = Field(None, description="a directory of .txt/.md documents (language from the subdir)")
    jsonl: list[str] = Field(default_factory=list, description="JSONL files of pairs or documents")
    parquet: list[str] = Field(default_factory=list, description="Parquet files of pairs or documents")
    hf: str | None = Field(None, description="a Hugging Face dataset (or json/parquet with data_files)")
    hf_config: str | None = None
    hf_split: str = "train"
    data_files: list[str] | None = None
    fields: str | None = Field(None, description="field map, e.g. query=question,positive=positive_passages")
    lang: str | None = Field(None, description="declared language of file/HF rows that carry none")
    kind: str = Field("question-answer", description="pair kind of file/HF rows")
    name: str | None = Field(None, description="source name of file/HF sources (default: from the kind)")

    def build(self) -> list:
        """The sources, in the pipeline's order; ValueError when none is enabled."""
        from m3core.data.sources.documents import DocumentDirSource
        from m3core.data.sources.files import FieldMap, JsonlSource, ParquetSource, RowMapper
        from m3core.data.sources.gettext import GettextSource
        from m3core.data.sources.hf import HFDatasetSource
        from m3core.data.sources.manpages import ManPageSource

        fields = FieldMap.parse(self.fields)
        sources: list = []
        if self.gettext:
            sources.append(
                GettextSource(
                    tuple(self.gettext_globs) or DEFAULT_GLOBS,
                    max_catalogs_per_language=self.max_catalogs_per_language,
                )
            )
        if self.docs:
            sources.append(DocumentDirSource(Path(self.docs), self.name or "documents", self.lang))
        if self.jsonl:
            mapper = RowMapper(self.name or "jsonl", fields, self.lang, self.kind)
            sources.append(JsonlSource([Path(p) for p in self.jsonl], mapper))
        if self.parquet:
            mapper = RowMapper(self.name or "parquet", fields, self.lang, self.kind)
            sources.append(ParquetSource([Path(p) for p in self.parquet], mapper))
        if self.hf:
            mapper = RowMapper(self.name or f"hf:{self.hf}", fields, self.lang, self.kind)
            sources.append(HFDatasetSource(self.hf, mapper, self.hf_config, self.hf_split, self.data_files))
        if self.manpages:
            sources.append(
                ManPageSource(
                    Path(self.manpage_root),
                    langs=tuple(self.manpage_languages) or None,
                    english=self.english,
                    max_per_language=self.max_per_language,
                )
            )
        if not sources:
            raise ValueError(
                "no source enabled: gettext, manpages, docs, jsonl, parquet or hf "
                "(`m3 mine --gettext/--manpages/--docs/--jsonl/--parquet/--hf`)"
            )
        return sources
