"""`m3 export train|eval|run OUT`: FlagEmbedding training JSONL, BEIR evaluation sets, or both (+ dev sets) as one
training run reads them (the retrain flow's export step)."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "export"
HELP = (
    "export training JSONL (train/dev/test by stable hash) or BEIR eval sets per language from the warehouse"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what",
        choices=["train", "eval", "run"],
        help="train: FlagEmbedding JSONL; eval: BEIR sets; run: train/ + eval/ + dev/ as a retrain reads them",
    )
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--warehouse", type=Path, help="DuckDB file (default: $M3_HOME/warehouse.duckdb)")
    p.add_argument("--langs", help="comma-separated language tags to keep")
    p.add_argument(
        "--kinds",
        default="title-body,question-answer,synthetic",
        help="pair kinds for train (add 'translation' deliberately: UI strings alone hurt retrieval)",
    )
    p.add_argument("--max-per-language", type=int, help="train: at most N queries per kind and language pair")
    p.add_argument("--negatives", type=int, default=3, help="train: random negatives per line")
    p.add_argument("--dev", type=float, default=0.05, help="fraction of groups in dev")
    p.add_argument("--test", type=float, default=0.10, help="fraction of groups in test")
    p.add_argument("--split", default="test", help="eval: which split's queries")
    p.add_argument("--max-queries", type=int, help="eval: at most N queries per set")
    p.add_argument("--min-queries", type=int, default=10, help="eval: skip sets with fewer queries")


def run(args: argparse.Namespace) -> int:
    import json

    from m3core.data.export import SplitSpec, export_eval_sets, export_run, export_training
    from m3core.data.warehouse import Warehouse

    langs = [s for s in args.langs.split(",") if s] if args.langs else None
    split = SplitSpec(dev=args.dev, test=args.test)
    with Warehouse(args.warehouse, read_only=True) as wh:
        if args.what == "run":
            result = export_run(
                wh,
                args.out,
                langs=langs,
                max_per_language=args.max_per_language,
                max_queries=args.max_queries,
            )
            print(json.dumps(result, indent=2))
        elif args.what == "train":
            kinds = [k for k in args.kinds.split(",") if k]
            lines = export_training(
                wh,
                args.out,
                kinds=kinds,
                langs=langs,
                max_per_language=args.max_per_language,
                negatives=args.negatives,
                split=split,
            )
            for name, counts in lines.items():
                print(
                    f"{args.out / (name + '.jsonl')}: {sum(counts.values())} lines in {len(counts)} kind/language groups"
                )
        else:
            sets = export_eval_sets(
                wh,
                args.out,
                which=args.split,
                langs=langs,
                max_queries=args.max_queries,
                min_queries=args.min_queries,
                split=split,
            )
            for meta in sets:
                print(
                    f"{args.out / meta['name']}: {meta['kind']} {meta['query_lang']}->{meta['corpus_lang']} "
                    f"{meta['n_queries']} queries, {meta['n_corpus']} passages"
                )
    return 0
