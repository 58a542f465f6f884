"""`m3 negatives`: mine hard negatives with an interim model into FlagEmbedding JSONL and/or the warehouse."""

from __future__ import annotations

import argparse
import json
import logging

from m3core.modes import MINING_MODES

NAME = "negatives"
HELP = "mine hard negatives with an interim model (files or warehouse pairs -> JSONL / warehouse rows)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the interim model directory (or hub id)")
    src = parser.add_argument_group("input (one of)")
    src.add_argument("--input", help="FlagEmbedding JSONL with 'query' and 'pos'")
    src.add_argument(
        "--from-warehouse", action="store_true", help="read queries/positives from the pairs table"
    )
    parser.add_argument("--corpus", help="passage pool: .jsonl ('text'[, 'title']) or .txt (one a line)")
    parser.add_argument(
        "--warehouse", default=None, help="warehouse file (default: <M3_HOME>/warehouse.duckdb)"
    )
    parser.add_argument("--kinds", default="", help="with --from-warehouse: comma-separated pair kinds")
    parser.add_argument("--langs", default="", help="with --from-warehouse: comma-separated languages")
    parser.add_argument(
        "--limit", type=int, default=None, help="with --from-warehouse: at most this many queries"
    )
    parser.add_argument("--output", help="write FlagEmbedding JSONL here")
    parser.add_argument(
        "--to-warehouse", action="store_true", help="write rows to the warehouse hard_negatives table"
    )
    parser.add_argument("--mode", choices=MINING_MODES, default="dense", help="ranking used for mining")
    parser.add_argument(
        "--range", default="2-200", help="1-based inclusive rank window to sample from (2-200)"
    )
    parser.add_argument("--num-negatives", type=int, default=15)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--teacher-scores", action="store_true", help="attach pos_scores/neg_scores (hybrid)")
    parser.add_argument(
        "--weights",
        default=None,
        help="hybrid weights: short, long or 'wd,ws,wc' (default: the model's profile)",
    )
    parser.add_argument(
        "--absolute-margin",
        type=float,
        default=None,
        metavar="M",
        help="drop candidates scoring above (the query's lowest positive score) - M: likely false negatives",
    )
    parser.add_argument(
        "--relative-margin",
        type=float,
        default=None,
        metavar="M",
        help="drop candidates scoring above pos - M*|pos| (pos*(1-M) for pos >= 0), M in [0, 1)",
    )
    parser.add_argument(
        "--rescore",
        choices=("hybrid",),
        default=None,
        help="judge the margins by the hybrid score and order the negatives by it (needs trained heads)",
    )
    # Unset (None): NegativesConfig's defaults, so they are written once.
    scale = parser.add_argument_group("large pools (unset: the library's defaults)")
    scale.add_argument(
        "--index",
        choices=("auto", "flat", "hnsw", "ivfpq"),
        default=None,
        help="dense index ranking the pool (auto: flat up to --flat-max-pool passages, ivfpq above)",
    )
    scale.add_argument("--flat-max-pool", type=int, default=None, metavar="N", help="auto: flat up to N")
    scale.add_argument(
        "--train-sample", type=int, default=None, metavar="N", help="ivfpq: train on N pool vectors (seeded)"
    )
    scale.add_argument("--nlist", type=int, default=None, help="ivfpq: k-means cells (0: sqrt of the pool)")
    scale.add_argument("--nprobe", type=int, default=None, help="ivfpq: k-means cells scanned per query")
    scale.add_argument("--ef-search", type=int, default=None, help="hnsw: candidate list size")
    scale.add_argument(
        "--query-shard-size",
        type=int,
        default=None,
        metavar="N",
        help="search and sample N queries at a time",
    )
    scale.add_argument(
        "--recall-queries",
        type=int,
        default=None,
        metavar="N",
        help="approximate index: check its top-100 against exact search on N queries (0: off)",
    )
    scale.add_argument(
        "--pool-embeddings",
        default=None,
        metavar="DIR",
        help="the pool encoded already (an embeddings directory, e.g. the encode_corpus flow's merged shards "
        "of the --write-pool file); checked against the pool",
    )
    scale.add_argument(
        "--write-pool",
        default=None,
        metavar="FILE",
        help="write the pool these inputs rank as a corpus JSONL (to encode in shards) and stop",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--query-max-length", type=int, default=None)
    parser.add_argument("--passage-max-length", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--cache-dir", default=None, help="keep the pool's embeddings here and reuse them")


def _parse_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise ValueError(f"--range {text!r}: expected START-END, e.g. 2-200") from None
    return lo, hi


def _flag_error(err: dict) -> str:
    """One pydantic error as `--flag VALUE: message` (the flags are the config's fields, `--range` aside)."""
    if not err["loc"]:  # a whole-config check (rank_range): its message names the field already
        return err["msg"].removeprefix("Value error, ")
    field = str(err["loc"][0])
    flag = "--range" if field == "rank_range" else "--" + field.replace("_", "-")
    return f"{flag} {err['input']!r}: {err['msg']}"


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from m3core import M3Embedder
    from m3core.negatives import (
        NegativesConfig,
        corpus_from_warehouse,
        examples_from_warehouse,
        mine_negatives,
        read_corpus,
        read_examples,
        write_jsonl,
        write_pool,
        write_warehouse,
    )

    if bool(args.input) == bool(args.from_warehouse):
        raise ValueError("give exactly one of --input FILE or --from-warehouse")
    if not args.output and not args.to_warehouse and not args.write_pool:
        raise ValueError("nowhere to write: give --output FILE and/or --to-warehouse (or --write-pool FILE)")
    same = ("mode", "num_negatives", "seed", "teacher_scores", "weights", "batch_size")  # flag = field name
    same += ("query_max_length", "passage_max_length", "absolute_margin", "relative_margin", "rescore")
    scale = ("index", "flat_max_pool", "train_sample", "nlist", "nprobe", "ef_search", "query_shard_size")
    scale += ("recall_queries",)
    given = {k: getattr(args, k) for k in same} | {k: v for k in scale if (v := getattr(args, k)) is not None}
    try:
        config = NegativesConfig(rank_range=_parse_range(args.range), **given)
    except ValidationError as err:
        # The front door prints one line per error; pydantic's message spans several and names fields, not flags.
        raise ValueError("; ".join(_flag_error(e) for e in err.errors())) from None
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    wh = None
    if args.from_warehouse or args.to_warehouse:
        from m3core.data.warehouse import Warehouse

        wh = Warehouse(args.warehouse)
    try:
        if args.input:
            examples = read_examples(args.input)
        else:
            examples = examples_from_warehouse(wh.con, split(args.kinds), split(args.langs), args.limit)
        if args.corpus:
            corpus = read_corpus(args.corpus)
        elif args.from_warehouse:
            corpus = corpus_from_warehouse(wh.con, split(args.langs))
        else:
            corpus = None
        if args.write_pool:
            summary = {"pool": write_pool(examples, args.write_pool, corpus), "pool_file": args.write_pool}
            print(json.dumps(summary))
            return 0
        embedder = M3Embedder(args.model, device=args.device, batch_size=args.batch_size, use_fp16=True)
        result = mine_negatives(
            embedder, examples, corpus, config, model_id=args.model, cache_dir=args.cache_dir,
            pool_embeddings=args.pool_embeddings,
        )  # fmt: skip
        summary = {
            "examples": len(result.examples),
            "pool": len(result.pool),
            "index": result.index,
            "index_recall": result.index_recall,
            "topped_up": result.n_topped_up,
            "margin_dropped": result.n_margin_dropped,
        }
        if args.output:
            summary["output"] = str(write_jsonl(result.examples, args.output))
        if args.to_warehouse:
            summary["run_id"] = write_warehouse(wh, result, config, model_id=args.model)
    finally:
        if wh is not None:
            wh.close()
    print(json.dumps(summary))
    return 0
