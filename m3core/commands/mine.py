"""`m3 mine`: ingest sources into the DuckDB warehouse and print what the run added per language."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "mine"
HELP = "mine pairs and long documents (gettext catalogs, man pages, JSONL/Parquet, HF datasets) into the warehouse"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warehouse", type=Path, help="DuckDB file (default: $M3_HOME/warehouse.duckdb)")
    p.add_argument(
        "--gettext",
        nargs="*",
        metavar="GLOB",
        help="gettext catalogs (default: /usr/share/locale/*/LC_MESSAGES/*.mo)",
    )
    p.add_argument(
        "--max-catalogs-per-language", type=int, help="sample at most N catalogs per language (stable)"
    )
    p.add_argument(
        "--manpages",
        nargs="?",
        const="/usr/share/man",
        metavar="ROOT",
        help="man page tree (default /usr/share/man)",
    )
    p.add_argument(
        "--english",
        choices=["translated", "all", "none"],
        default="translated",
        help="which English man pages",
    )
    p.add_argument(
        "--docs", type=Path, metavar="DIR", help="directory of .txt/.md documents (lang from subdir)"
    )
    p.add_argument("--jsonl", nargs="+", type=Path, metavar="FILE", help="JSONL files of pairs or documents")
    p.add_argument(
        "--parquet", nargs="+", type=Path, metavar="FILE", help="Parquet files of pairs or documents"
    )
    p.add_argument(
        "--hf", metavar="NAME", help="Hugging Face dataset name (or json/parquet with --data-files)"
    )
    p.add_argument("--hf-config")
    p.add_argument("--hf-split", default="train")
    p.add_argument("--data-files", nargs="+", help="data_files for --hf json/parquet")
    p.add_argument(
        "--map", dest="fields", help="field mapping, e.g. query=question,positive=positive_passages"
    )
    p.add_argument("--lang", help="declared language for --jsonl/--parquet/--hf rows without one")
    p.add_argument("--kind", default="question-answer", help="pair kind for file/HF rows")
    p.add_argument("--name", help="source name for file/HF sources (default: from the path)")
    p.add_argument("--langs", help="comma-separated language tags to keep (man pages)")
    p.add_argument(
        "--max-per-language",
        type=int,
        help="at most N new pairs per source and language (and man pages per language)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")


def build_sources(args: argparse.Namespace) -> list:
    """The sources the arguments name, in a fixed order (man pages last: cross-lingual derivation)."""
    from m3core.data.sources.documents import DocumentDirSource
    from m3core.data.sources.files import FieldMap, JsonlSource, ParquetSource, RowMapper
    from m3core.data.sources.gettext import DEFAULT_GLOBS, GettextSource
    from m3core.data.sources.hf import HFDatasetSource
    from m3core.data.sources.manpages import ManPageSource

    fields = FieldMap.parse(args.fields)
    sources: list = []
    if args.gettext is not None:
        sources.append(
            GettextSource(
                tuple(args.gettext) or DEFAULT_GLOBS, max_catalogs_per_language=args.max_catalogs_per_language
            )
        )
    if args.docs:
        sources.append(DocumentDirSource(args.docs, args.name or "documents", args.lang))
    if args.jsonl:
        sources.append(JsonlSource(args.jsonl, RowMapper(args.name or "jsonl", fields, args.lang, args.kind)))
    if args.parquet:
        sources.append(
            ParquetSource(args.parquet, RowMapper(args.name or "parquet", fields, args.lang, args.kind))
        )
    if args.hf:
        mapper = RowMapper(args.name or f"hf:{args.hf}", fields, args.lang, args.kind)
        sources.append(HFDatasetSource(args.hf, mapper, args.hf_config, args.hf_split, args.data_files))
    if args.manpages:
        langs = tuple(args.langs.split(",")) if args.langs else None
        sources.append(
            ManPageSource(
                Path(args.manpages), langs=langs, english=args.english, max_per_language=args.max_per_language
            )
        )
    if not sources:
        raise ValueError("no source given: use --gettext, --manpages, --docs, --jsonl, --parquet or --hf")
    return sources


def run(args: argparse.Namespace) -> int:
    from m3core.data.pipeline import MineConfig, mine
    from m3core.data.report import print_run_report
    from m3core.data.warehouse import Warehouse

    sources = build_sources(args)
    cfg = MineConfig(
        workers=args.workers, max_per_language=args.max_per_language, progress=not args.no_progress
    )
    with Warehouse(args.warehouse) as wh:
        summary = mine(sources, wh, cfg)
        print_run_report(wh, summary)
    return 0
