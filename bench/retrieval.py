"""Retrieval benchmark: corpus encode + index throughput, query latency per mode, sparse index vs brute force.

    .venv/bin/python bench/retrieval.py --model .cache/e5-small --eval-set .cache/evalsets/man-de --threads 1

Everything is measured in one run on one machine with the thread count pinned (torch and faiss), so the
ratios are comparable: the sparse inverted index is compared with brute-force scoring of every
(query, passage) pair — `m3core.scoring.lexical_score` per pair, and `scoring.lexical_scores` as one
matrix product — on the real corpus and on a synthetic scale-up of its lexical weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _scale_up(lexical: list[dict[str, float]], n: int, seed: int) -> list[dict[str, float]]:
    """``n`` passages with the token statistics of ``lexical``: random real passages with jittered weights."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(len(lexical), size=n):
        w = lexical[i]
        out.append({t: float(v) * float(rng.uniform(0.5, 1.5)) for t, v in w.items()})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory (M3 or plain HF backbone)")
    ap.add_argument(
        "--eval-set", required=True, help="a BEIR set directory (its corpus and queries are used)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch and faiss threads (pinned, reported)")
    ap.add_argument("--max-docs", type=int, default=2000)
    ap.add_argument("--max-queries", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--passage-max-length", type=int, default=256)
    ap.add_argument(
        "--scale-docs", type=int, default=50000, help="synthetic corpus size for the sparse comparison"
    )
    ap.add_argument(
        "--brute-queries", type=int, default=20, help="queries for the (slow) per-pair brute force"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    try:  # numpy's BLAS pool too: small ColBERT matmuls slow down badly when its threads fight for cores
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from m3core import M3Embedder, scoring
    from m3core.evaluation import load_eval_set
    from m3core.modes import MODES
    from m3core.retrieval import DenseIndex, DenseIndexConfig, Retriever, RetrieverConfig, SparseIndex
    from m3core.retrieval.corpus import encode_texts
    from m3core.retrieval.sparse import brute_force_search

    es = load_eval_set(args.eval_set)
    docs = list(es.corpus.values())[: args.max_docs]
    queries = list(es.queries.values())[: args.max_queries]
    emb = M3Embedder(args.model, device=args.device, batch_size=args.batch_size, use_fp16=False)
    enc = dict(batch_size=args.batch_size, model_id=args.model)
    fig: dict[str, float | int | str] = {
        "model": args.model,
        "eval_set": str(args.eval_set),
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "n_docs": len(docs),
        "n_queries": len(queries),
    }

    corpus, t_enc = _timed(encode_texts, emb, docs, max_length=args.passage_max_length, **enc)
    q_emb, t_qenc = _timed(encode_texts, emb, queries, side="query", **enc)
    fig["encode_docs_per_s"] = len(docs) / t_enc
    fig["encode_queries_per_s"] = len(queries) / t_qenc
    _, t_flat = _timed(DenseIndex.build, corpus.dense)
    _, t_hnsw = _timed(DenseIndex.build, corpus.dense, DenseIndexConfig(kind="hnsw"))
    _, t_sparse = _timed(SparseIndex.build, corpus.lexical)
    fig["index_flat_docs_per_s"] = len(docs) / t_flat
    fig["index_hnsw_docs_per_s"] = len(docs) / t_hnsw
    fig["index_sparse_docs_per_s"] = len(docs) / t_sparse
    fig["encode_plus_index_docs_per_s"] = len(docs) / (t_enc + t_flat + t_sparse)

    retriever = Retriever(corpus, RetrieverConfig(weights="short", candidates=200))
    for mode in MODES:
        _, t = _timed(retriever.search, q_emb, mode, 100)
        fig[f"latency_ms_{mode}"] = 1000 * t / len(queries)

    # Sparse: inverted index vs brute force, on the real corpus and on a synthetic scale-up.
    for label, passages in (
        ("real", corpus.lexical),
        ("scaled", _scale_up(corpus.lexical, args.scale_docs, 0)),
    ):
        index, _t_build = _timed(SparseIndex.build, passages)
        (_s_idx, i_idx), t_idx = _timed(index.search, q_emb.lexical, 100)
        nb = min(args.brute_queries, len(queries))
        (_s_bf, i_bf), t_bf = _timed(brute_force_search, q_emb.lexical[:nb], passages, 100)
        _, t_mat = _timed(scoring.lexical_scores, q_emb.lexical, passages)
        same = bool(np.array_equal(i_idx[:nb], i_bf))
        fig[f"sparse_{label}_docs"] = len(passages)
        fig[f"sparse_{label}_postings"] = index.n_postings
        fig[f"sparse_{label}_index_ms_per_query"] = 1000 * t_idx / len(queries)
        fig[f"sparse_{label}_bruteforce_pairs_ms_per_query"] = 1000 * t_bf / nb
        fig[f"sparse_{label}_bruteforce_matrix_ms_per_query"] = 1000 * t_mat / len(queries)
        fig[f"sparse_{label}_speedup_vs_pairs"] = (t_bf / nb) / (t_idx / len(queries))
        fig[f"sparse_{label}_speedup_vs_matrix"] = t_mat / t_idx
        fig[f"sparse_{label}_same_topk_as_bruteforce"] = same

    w = max(len(k) for k in fig)
    for k, v in fig.items():
        print(f"{k:<{w}}  {v:.2f}" if isinstance(v, float) else f"{k:<{w}}  {v}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
