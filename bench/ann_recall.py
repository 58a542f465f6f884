"""Recall of the approximate dense indexes against the flat one on a model's embeddings of real mined data.

The queries and the passage pool are a mining run's: `--train-file` (FlagEmbedding JSONL: its queries, and its
own positives and negatives as the pool, as the `mine_hard_negatives` flow ranks them). With `--warehouse`, a
second, larger pool adds `--extra-pool` of the warehouse's distinct pair positives (drawn with `--seed`; the file
is opened read-only). Both are encoded with `--model` (dense only, cached under `--cache-dir`).

For each pool it builds the flat index (the baseline, in the same run), HNSW and IVF-PQ as mining builds them
(`m3core.negatives.dense_index_config`: IVF-PQ with sqrt(n) cells, re-ranked), and prints recall@k of the flat
top-k (ties counted, `m3core.retrieval.ann_recall`: mean, 5th percentile, worst query; and the plain id
overlap), build and search seconds for all queries, bytes per vector, and each
as a ratio to flat; the search parameters are swept (`--nprobe`, `--ef-search`, the first of each is not
necessarily the default: the default is marked). Then it mines negatives from the same pool embeddings with
each index (the embedded default's window unless `--range`/`--num-negatives`) and prints the share of the
chosen negatives that lie in the flat ranking's window, their mean flat rank (as hard?) and the share equal to
the flat run's (low by design: negatives are sampled by position in the window, so one rank moved changes them).

    .venv/bin/python bench/ann_recall.py --model DIR --train-file JSONL [--warehouse FILE --extra-pool 20000]
        [--threads 1] [--k 100] [--nprobe 32,64,128] [--ef-search 128,256] [--timing-sizes 100000,300000]

`--timing-sizes` adds flat-vs-IVF-PQ build and search times on larger pools made of the largest pool's vectors
with a little noise: where the approximate index starts to pay (`NegativesConfig.flat_max_pool`), not its recall.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from bench._common import best_time, env_summary, pin_threads, print_table


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _set_search(index, kind: str, value: int) -> None:
    """Set an index's search breadth in place: nprobe (IVF-PQ) or efSearch (HNSW)."""
    import faiss

    if kind == "ivfpq":
        ivf = faiss.extract_index_ivf(index.index)
        ivf.nprobe = min(value, ivf.nlist)
    elif kind == "hnsw":
        index.index.hnsw.efSearch = value


def _nlist(index) -> int:
    import faiss

    return int(faiss.extract_index_ivf(index.index).nlist)


def index_rows(name: str, pool, queries, args, defaults) -> list[list[object]]:
    """One row per index and search setting over the pool's vectors."""
    from m3core.negatives import NegativesConfig, dense_index_config
    from m3core.retrieval.ann_recall import exact_scores, exact_top_k, recall_at_k
    from m3core.retrieval.dense import DenseIndex

    n, k = len(pool), min(args.k, len(pool))
    kth, exact = exact_top_k(pool, queries, k)
    sweeps = {"flat": [0], "hnsw": args.ef_search, "ivfpq": args.nprobe}
    rows, flat = [], {}
    for kind, values in sweeps.items():
        config = dense_index_config(NegativesConfig(index=kind, seed=args.seed), n)
        start = time.perf_counter()
        index = DenseIndex.build(pool, config)
        build = time.perf_counter() - start
        size = index.nbytes() / n
        for value in values:
            _set_search(index, kind, value)
            search = best_time(lambda index=index: index.search(queries, k), args.repeats)
            _, found = index.search(queries, k)
            recall = recall_at_k(exact_scores(pool, queries, found), kth[:, -1], k)
            overlap = np.mean(
                [len(set(a) & set(b)) / k for a, b in zip(found.tolist(), exact.tolist(), strict=True)]
            )
            if kind == "flat":
                flat = {"build": build, "search": search, "bytes": size}
                setting = "exact"
            else:
                knob = "nprobe" if kind == "ivfpq" else "ef"
                extra = f" of {_nlist(index)} cells" if kind == "ivfpq" else ""
                mark = " (default)" if value == defaults[kind] else ""
                setting = f"{knob} {value}{extra}{mark}"
            rows.append([
                name, n, kind, setting, f"{recall.mean():.4f}", f"{np.percentile(recall, 5):.2f}",
                f"{recall.min():.2f}", f"{overlap:.4f}", f"{build:.2f}", f"{build / flat['build']:.1f}x", f"{search:.3f}",
                f"{search / flat['search']:.2f}x", f"{size:.0f}", f"{size / flat['bytes']:.2f}x",
            ])  # fmt: skip
    return rows


def mining_rows(name: str, embedder, examples, corpus, pool_emb, queries, args) -> list[list[object]]:
    """Mine with each index from the same pool embeddings. Which negatives are drawn depends on every rank in
    the window (they are sampled by position), so equal sets are not expected from an approximate ranking;
    what should hold is that they come from the flat run's window, and are as hard (their mean flat rank)."""
    from m3core.negatives import NegativesConfig, mine_negatives

    lo, hi = (int(x) for x in args.range.split("-"))
    runs = {}
    for kind in ("flat", "hnsw", "ivfpq"):
        config = NegativesConfig(
            index=kind, rank_range=(lo, hi), num_negatives=args.num_negatives, seed=args.seed
        )
        runs[kind] = mine_negatives(embedder, examples, corpus, config, pool_embeddings=pool_emb)
    pool = runs["flat"].pool
    index_of = {t: i for i, t in enumerate(pool)}
    scores = queries @ pool_emb.dense.T  # [nq, n]: a passage's flat rank is 1 + the passages scoring above it

    def flat_rank(qi: int, text: str) -> int:
        return 1 + int((scores[qi] > scores[qi, index_of[text]]).sum())

    rows = []
    for kind, result in runs.items():
        pairs = list(zip(result.examples, runs["flat"].examples, strict=True))
        same = np.mean([len(set(a.neg) & set(b.neg)) / max(1, len(b.neg)) for a, b in pairs])
        ranks = [flat_rank(qi, t) for qi, e in enumerate(result.examples) for t in e.neg]
        in_window = np.mean([lo <= r <= hi for r in ranks])
        recall = "exact" if result.index_recall is None else f"{result.index_recall:.4f}"
        rows.append([
            name, len(pool), kind, recall, f"{in_window:.4f}", f"{np.mean(ranks):.1f}", f"{same:.4f}",
        ])  # fmt: skip
    return rows


def timing_rows(sizes: list[int], pool: np.ndarray, queries: np.ndarray, args) -> list[list[object]]:
    """Build and search seconds of flat and IVF-PQ (mining defaults) on pools of ``sizes`` vectors drawn from
    ``pool`` with a little noise (timing only: their recall says nothing about real data)."""
    from m3core.negatives import NegativesConfig, dense_index_config
    from m3core.retrieval.dense import DenseIndex

    rng = np.random.default_rng(args.seed)
    rows = []
    for n in sizes:
        p = pool[rng.integers(len(pool), size=n)] + 0.03 * rng.standard_normal((n, pool.shape[1]), np.float32)
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        times = {}
        for kind in ("flat", "ivfpq"):
            start = time.perf_counter()
            index = DenseIndex.build(p, dense_index_config(NegativesConfig(index=kind, seed=args.seed), n))
            build = time.perf_counter() - start
            search = best_time(lambda index=index: index.search(queries, args.k), args.repeats)
            times[kind] = search
            rows.append([n, kind, f"{build:.1f}", f"{search:.2f}", f"{search / times['flat']:.2f}x",
                         f"{index.nbytes() / n:.0f}"])  # fmt: skip
    return rows


def main() -> int:
    from m3core.negatives import EF_SEARCH, NPROBE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", required=True, help="the (interim) model directory that encodes queries and pool"
    )
    ap.add_argument("--train-file", required=True, help="FlagEmbedding JSONL of a mining run")
    ap.add_argument("--warehouse", default=None, help="add --extra-pool of its pair positives (read-only)")
    ap.add_argument("--extra-pool", type=int, default=20_000, help="warehouse positives in the larger pool")
    ap.add_argument("--threads", type=int, default=1, help="torch and faiss threads")
    ap.add_argument("--k", type=int, default=100, help="recall@k of the flat top-k")
    ap.add_argument("--nprobe", type=_ints, default=[32, NPROBE, 128], help="IVF-PQ nprobe values to sweep")
    ap.add_argument("--ef-search", type=_ints, default=[128, EF_SEARCH], help="HNSW efSearch values to sweep")
    ap.add_argument("--range", default="2-60", help="mining rank window (the embedded default's)")
    ap.add_argument(
        "--num-negatives", type=int, default=3, help="negatives per query (the embedded default's)"
    )
    ap.add_argument("--no-mining", action="store_true", help="skip the mining comparison")
    ap.add_argument(
        "--timing-sizes",
        type=_ints,
        default=[],
        help="also time flat vs IVF-PQ on jittered pools of these sizes",
    )
    ap.add_argument("--repeats", type=int, default=3, help="search timing: best of this many")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=".cache/bench/ann-recall", help="encoded queries and pools")
    args = ap.parse_args()

    pin_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    from m3core import M3Embedder
    from m3core.negatives import build_pool, read_examples
    from m3core.retrieval.corpus import encode_texts, model_fingerprint

    examples = read_examples(args.train_file)
    pools = {"mined": (None, build_pool(examples, None))}
    if args.warehouse:
        import duckdb

        con = duckdb.connect(args.warehouse, read_only=True)
        try:
            positives = [
                r[0] for r in con.execute("SELECT DISTINCT positive FROM pairs ORDER BY 1").fetchall()
            ]
        finally:
            con.close()
        extra = sorted(random.Random(args.seed).sample(positives, min(args.extra_pool, len(positives))))
        corpus = pools["mined"][1] + extra
        pools[f"mined+{len(extra)}"] = (corpus, build_pool(examples, corpus))
    embedder = M3Embedder(args.model, show_progress=False)
    cache, model_id = Path(args.cache_dir), model_fingerprint(args.model)
    enc = {"outputs": ("dense",), "model_id": model_id}
    start = time.perf_counter()
    q = encode_texts(embedder, [e.query for e in examples], side="query", cache_dir=cache / "queries", **enc)
    encoded = {
        name: encode_texts(embedder, pool, side="passage", cache_dir=cache / f"pool-{name}", **enc)
        for name, (_, pool) in pools.items()
    }
    print(f"queries {len(examples)}; pools {', '.join(f'{k} {len(v)}' for k, v in encoded.items())}; "
          f"encoded/loaded in {time.perf_counter() - start:.0f} s; {env_summary(args.threads)}")  # fmt: skip

    defaults = {"ivfpq": NPROBE, "hnsw": EF_SEARCH}
    rows = [r for name, emb in encoded.items() for r in index_rows(name, emb.dense, q.dense, args, defaults)]
    print(f"\nrecall@{args.k} of the flat top-{args.k} ({len(examples)} queries, {args.threads} thread(s))")
    print_table(
        ["pool", "n", "index", "search", f"recall@{args.k}", "p5", "worst", "same ids", "build s", "vs flat", "search s",
         "vs flat", "B/vector", "vs flat"],
        rows,
    )  # fmt: skip
    if not args.no_mining:
        rows = [
            r
            for name, emb in encoded.items()
            for r in mining_rows(name, embedder, examples, pools[name][0], emb, q.dense, args)
        ]
        print(f"\nnegatives mined with each index (rank window {args.range}, {args.num_negatives} per query)")
        print_table(
            ["pool", "n", "index", "index_recall", "in flat window", "mean flat rank", "same as flat"], rows
        )
    if args.timing_sizes:
        largest = list(encoded.values())[-1].dense
        print(f"\nflat vs IVF-PQ time on pools of real vectors jittered (noise 0.03; timing only), {len(examples)} "
              f"queries, top-{args.k}")  # fmt: skip
        rows = timing_rows(args.timing_sizes, largest, q.dense, args)
        print_table(["n", "index", "build s", "search s", "vs flat", "B/vector"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
