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
    p.add_argument(
        "--shard-root",
        metavar="DIR|URL",
        help="mine each source unit into a Parquet shard here (a directory or fsspec URL; unchanged units are "
        "skipped), then ingest the shards: the same warehouse as without",
    )
    p.add_argument("--no-progress", action="store_true")


def spec_from_args(args: argparse.Namespace):
    """The `SourcesSpec` the flags name (the `mine_pairs` flow's parameters carry the same spec)."""
    from m3core.data.sources.spec import SourcesSpec

    # Flags that carry a spec field as it is (same name); the others need a conversion.
    same = ("max_catalogs_per_language", "english", "max_per_language", "hf", "hf_config", "hf_split")
    same += ("data_files", "fields", "lang", "kind", "name")
    return SourcesSpec(
        **{name: getattr(args, name) for name in same},
        gettext=args.gettext is not None,
        **({"gettext_globs": list(args.gettext)} if args.gettext else {}),
        manpages=bool(args.manpages),
        **({"manpage_root": args.manpages} if args.manpages else {}),
        manpage_languages=[x for x in (args.langs or "").split(",") if x],
        docs=str(args.docs) if args.docs else None,
        jsonl=[str(p) for p in args.jsonl or []],
        parquet=[str(p) for p in args.parquet or []],
    )


def build_sources(args: argparse.Namespace) -> list:
    """The sources the arguments name, in a fixed order (man pages last: cross-lingual derivation)."""
    return spec_from_args(args).build()


def run(args: argparse.Namespace) -> int:
    from m3core.data.pipeline import mine_sources
    from m3core.data.report import print_run_report
    from m3core.data.warehouse import Warehouse

    spec = spec_from_args(args)
    spec.build()  # a flag error before the warehouse is opened
    with Warehouse(args.warehouse) as wh:
        if args.shard_root:
            from m3core.data.shards import mine_sources_sharded

            summary, shards = mine_sources_sharded(
                spec, wh, args.shard_root, workers=args.workers, progress=not args.no_progress
            )
            skipped = sum(s.skipped for s in shards)
            print(
                f"shards under {args.shard_root}: {len(shards)} units, {len(shards) - skipped} made, "
                f"{skipped} unchanged (skipped)"
            )
        else:
            summary = mine_sources(spec, wh, workers=args.workers, progress=not args.no_progress)
        print_run_report(wh, summary)
    return 0
