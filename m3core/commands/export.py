"""`m3 export train|eval|run|long-eval|long-train OUT`: FlagEmbedding training JSONL, BEIR evaluation sets, or
both (+ dev sets) as one training run reads them (the retrain flow's export step); the long-document sets and
training lines (`m3core.data.long_documents`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from m3core.data.export import SplitSpec
from m3core.data.long_documents import LongDocSpec

NAME = "export"
HELP = (
    "export training JSONL (train/dev/test by stable hash) or BEIR eval sets per language from the warehouse"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what",
        choices=["train", "eval", "run", "long-eval", "long-train"],
        help="train: FlagEmbedding JSONL; eval: BEIR sets; run: train/ + eval/ + dev/ as a retrain reads them; "
        "long-eval: BEIR sets long-<L> of deep-sentence queries over long documents; long-train: FlagEmbedding "
        "lines of the same kind from the train split (OUT is the .jsonl file)",
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
    p.add_argument("--dev", type=float, default=SplitSpec.dev, help="fraction of groups in dev")
    p.add_argument("--test", type=float, default=SplitSpec.test, help="fraction of groups in test")
    p.add_argument("--split", default="test", help="eval: which split's queries")
    p.add_argument("--max-queries", type=int, help="eval: at most N queries per set")
    p.add_argument(
        "--min-queries",
        type=int,
        default=None,
        help="eval: skip sets with fewer queries (default 10, long 5)",
    )
    long = p.add_argument_group("long-eval / long-train")
    long.add_argument("--model", help="the model (or tokenizer) directory whose tokens count the lengths")
    long.add_argument("--min-tokens", type=int, default=LongDocSpec.min_tokens, help="shortest long document")
    long.add_argument(
        "--max-tokens", type=int, default=LongDocSpec.max_tokens, help="a query sentence ends within these"
    )
    long.add_argument(
        "--deep-from", type=int, default=LongDocSpec.deep_from, help="a query sentence starts past this token"
    )
    long.add_argument("--queries-per-doc", type=int, default=LongDocSpec.queries_per_doc)
    long.add_argument("--max-corpus", type=int, help="long-eval: at most N documents per language's corpus")


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
        elif args.what in ("long-eval", "long-train"):
            return _export_long(args, wh, langs, split)
        else:
            sets = export_eval_sets(
                wh,
                args.out,
                which=args.split,
                langs=langs,
                max_queries=args.max_queries,
                min_queries=10 if args.min_queries is None else args.min_queries,
                split=split,
            )
            for meta in sets:
                print(
                    f"{args.out / meta['name']}: {meta['kind']} {meta['query_lang']}->{meta['corpus_lang']} "
                    f"{meta['n_queries']} queries, {meta['n_corpus']} passages"
                )
    return 0


def _export_long(args: argparse.Namespace, wh, langs: list[str] | None, split: SplitSpec) -> int:
    from transformers import AutoTokenizer

    from m3core.data.long_documents import export_long_eval_sets, export_long_training

    if not args.model:
        raise ValueError(f"m3 export {args.what} needs --model: the model whose tokenizer counts the tokens")
    spec = LongDocSpec(  # checked before the tokenizer loads
        min_tokens=args.min_tokens,
        max_tokens=args.max_tokens,
        deep_from=args.deep_from,
        queries_per_doc=args.queries_per_doc,
        max_corpus_per_language=args.max_corpus,
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.what == "long-train":
        counts = export_long_training(
            wh,
            args.out,
            tokenizer,
            spec=spec,
            langs=langs,
            negatives=args.negatives,
            split=split,
            max_per_language=args.max_per_language,
        )
        print(f"{args.out}: {sum(counts.values())} lines: {counts}")
        return 0
    sets = export_long_eval_sets(
        wh,
        args.out,
        tokenizer,
        spec=spec,
        which=args.split,
        langs=langs,
        min_queries=5 if args.min_queries is None else args.min_queries,
        split=split,
    )
    for meta in sets:
        t = meta["corpus_tokens"]
        print(
            f"{args.out / meta['name']}: {meta['n_queries']} queries, {meta['n_corpus']} documents of "
            f"{t['min']}-{t['max']} tokens (median {t['p50']}), query sentences at token "
            f"{meta['query_position']['min']}-{meta['query_position']['max']}"
        )
    return 0
