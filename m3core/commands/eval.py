"""`m3 eval`: retrieval quality of a model on BEIR-layout eval sets, every mode, per language, next to BM25."""

from __future__ import annotations

import argparse
import json
import logging

NAME = "eval"
HELP = (
    "evaluate a model (dense/sparse/colbert/hybrid, per language, with a BM25 baseline) on BEIR-layout sets"
)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model directory (or hub id); omit with --modes '' for BM25 only")
    parser.add_argument(
        "--eval-set", required=True, help="a BEIR set directory, or a directory of them (one per language)"
    )
    parser.add_argument("--out", default=None, help="report directory (default: <M3_HOME>/eval/<model name>)")
    parser.add_argument(
        "--modes",
        default="dense,sparse,colbert,dense+sparse,all",
        help="comma-separated modes among dense, sparse, colbert, dense+sparse, all ('' for none)",
    )
    parser.add_argument("--no-bm25", action="store_true", help="skip the BM25 baseline")
    parser.add_argument(
        "--weights",
        default=None,
        help="hybrid weights: short (1,0.3,1), long (0.15,0.5,0.35) or 'wd,ws,wc' (default: the model's profile)",
    )
    parser.add_argument("--k", type=int, default=100, help="depth of each ranking (Recall@k uses 100)")
    parser.add_argument("--candidates", type=int, default=200, help="candidates re-scored by colbert/hybrid")
    parser.add_argument(
        "--index", choices=["flat", "hnsw", "ivf"], default="flat", help="faiss dense index kind"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--onnx-variant",
        choices=("fp32", "int8"),
        default="fp32",
        help="with an `m3 export-onnx` directory as --model: which graph (int8 needs an --int8 export)",
    )
    parser.add_argument("--query-max-length", type=int, default=None)
    parser.add_argument("--passage-max-length", type=int, default=None)
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU if there is one)"
    )
    parser.add_argument("--cache-dir", default=None, help="keep corpus/query embeddings here and reuse them")
    parser.add_argument(
        "--pooling", choices=["cls", "mean"], default=None, help="override the model's pooling"
    )
    parser.add_argument(
        "--query-instruction",
        default=None,
        help="prefix for queries (default: the model's profile, e.g. e5 'query: '; '' for none)",
    )
    parser.add_argument(
        "--passage-instruction",
        default=None,
        help="prefix for passages (default: the model's profile, e.g. e5 'passage: '; '' for none)",
    )
    parser.add_argument(
        "--mcls",
        action="store_true",
        help="encode the corpus in MCLS mode (a CLS every mcls_stride tokens; long documents)",
    )
    parser.add_argument("--split", default="test", help="qrels split file name under qrels/ (default test)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from m3core.evaluation import EvalConfig, evaluate, load_eval_sets, markdown_table, write_report
    from m3core.modes import HYBRID_PRESETS
    from m3core.paths import m3_home
    from m3core.retrieval import DenseIndexConfig, resolve_weights

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if modes and not args.model:
        raise ValueError("--model is required unless --modes '' (BM25 only)")
    weights = args.weights
    if weights is not None and weights not in HYBRID_PRESETS:
        weights = resolve_weights(weights)
    config = EvalConfig(
        modes=modes,
        bm25=not args.no_bm25,
        k=args.k,
        candidates=args.candidates,
        weights=weights,
        batch_size=args.batch_size,
        query_max_length=args.query_max_length,
        passage_max_length=args.passage_max_length,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        mcls=args.mcls,
        dense_index=DenseIndexConfig(kind=args.index),
    )
    failures: list[dict[str, str]] = []  # a bad set is reported; the others are evaluated
    sets = load_eval_sets(args.eval_set, split=args.split, failures=failures)
    embedder = None
    if modes:
        from m3core import M3Embedder

        embedder = M3Embedder(
            args.model,
            device=args.device,
            batch_size=args.batch_size,
            use_fp16=True,
            pooling_method=args.pooling,
            query_instruction_for_retrieval=args.query_instruction,
            passage_instruction_for_retrieval=args.passage_instruction,
            onnx_variant=args.onnx_variant,
        )
    report = evaluate(embedder, sets, config, model_id=args.model, failures=failures)
    out = (
        Path(args.out) if args.out else m3_home() / "eval" / (Path(args.model).name if args.model else "bm25")
    )
    paths = write_report(report, out)
    print(markdown_table(report))
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 1 if report["failed_sets"] else 0  # the report is written; a failed set still fails the command
