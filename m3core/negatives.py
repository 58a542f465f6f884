"""Hard-negative mining with an interim model.

For each training query, the model ranks a passage pool (the corpus plus every positive) and negatives
are sampled from a rank window (default ranks 2–200, 1-based, inclusive): rank 1 is skipped because it is
usually the positive or an unlabelled true answer, and very deep ranks are too easy to teach anything.
A negative is never one of the query's positives nor a duplicate of the query (compared after collapsing
whitespace and case), and never repeated. When the window holds too few eligible passages, random pool
passages outside the skipped top ranks fill the list (reported, and marked with rank None).

Positive-aware filtering (off by default; sentence-transformers' `absolute_margin` / `relative_margin`,
NV-Retriever's "TopK-MarginPos" / "TopK-PercPos"): a candidate scoring almost as high as the query's positive is
more likely an unlabelled answer than a negative, so one scoring above `pos − absolute_margin` or
`pos − relative_margin·|pos|` (= `pos·(1 − relative_margin)` for pos ≥ 0) is dropped; with both, the lower
bound applies. `pos` is the query's *lowest* positive score (with several positives, the strictest threshold).
The `|pos|` keeps the bound below the positive when its score is negative, where the plain `pos·(1 − r)` would
lie above it and keep candidates scoring *higher* than the positive.
The scores are the ranking's own (dense, or the hybrid with `mode="hybrid"`) or, with `rescore="hybrid"`, the
hybrid of the modes with a non-zero weight (a better judge than dense alone), which also orders the sampled
negatives hardest first; the sample itself is drawn from the rank window as without rescoring. Dropped
candidates are counted as likely false negatives (`MiningResult.n_margin_dropped`, the run summary,
`mining_runs`), never hidden; random top-up passages pass the same check and count when dropped.
`rescore="hybrid"` is an error with a plain backbone (no trained sparse/ColBERT heads: they are random) unless
the weights are dense-only.

Optionally each example carries teacher scores: the model's hybrid score (w_dense·dense + w_sparse·lex +
w_colbert·colbert) of the query against each positive and negative, as the M3 self-distillation expects.

At scale: the pool can come pre-encoded (`pool_embeddings`: an `Embeddings` directory such as the
`encode_corpus` flow's merged shards, checked against the pool's size, order and model before use), the dense
index ranking it is chosen by its size (`index="auto"`: exact `flat` up to `flat_max_pool` passages, IVF-PQ
above, trained on a seeded sample of `train_sample` vectors; `m3core.retrieval.ann_recall` measures its recall
against the flat one), and the queries are searched and sampled `query_shard_size` at a time, so memory stays
bounded and the negatives do not depend on the shard size.

Inputs: FlagEmbedding JSONL / a corpus file, or the warehouse `pairs` table. Outputs: FlagEmbedding JSONL
and/or rows in the warehouse table `hard_negatives` (schema namespace "negatives").
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# `Example` and its JSONL reader/writer are defined once, in `m3core.data.examples` (`m3core.negatives.Example` and
# `write_jsonl` are those).
from m3core.data.examples import Example, read_jsonl, write_jsonl
from m3core.modes import OUTPUTS, MiningMode, Mode, Weights
from m3core.retrieval.corpus import Embeddings, encode_texts, read_corpus  # m3core.negatives.read_corpus too
from m3core.retrieval.dense import DenseIndexConfig
from m3core.retrieval.hybrid import mode_scores, model_weights, resolve_weights
from m3core.retrieval.retriever import Retriever, RetrieverConfig

log = logging.getLogger(__name__)

# Warehouse tables of this package; append migrations, never edit applied ones.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_hard_negatives",
        """
        CREATE TABLE mining_runs (
            run_id VARCHAR PRIMARY KEY,
            model VARCHAR,          -- the interim model (path or registry URI) that ranked the pool
            config VARCHAR,         -- JSON of NegativesConfig
            n_examples BIGINT,
            n_topped_up BIGINT,     -- examples that needed random negatives
            created_at TIMESTAMP
        );
        CREATE TABLE hard_negatives (
            example_id VARCHAR PRIMARY KEY,  -- hash of (run_id, query)
            run_id VARCHAR,
            query VARCHAR,
            pos VARCHAR[],
            neg VARCHAR[],
            neg_ranks INTEGER[],             -- 1-based rank in the model's ranking; NULL = random top-up
            pos_scores DOUBLE[],             -- teacher scores (NULL when not asked for)
            neg_scores DOUBLE[],
            pair_ids VARCHAR[],              -- the warehouse pairs this example came from, if any
            lang VARCHAR,
            prompt VARCHAR,
            type VARCHAR,
            created_at TIMESTAMP
        );
        """,
    ),
    (
        "0002_mining_runs_margin_dropped",
        """
        -- candidates dropped by absolute/relative_margin (likely false negatives); NULL: a run recorded before
        ALTER TABLE mining_runs ADD COLUMN n_margin_dropped BIGINT;
        """,
    ),
]


# Defaults of the approximate indexes, measured to meet RECALL_GOAL (recall@100 of the flat top-100, ties counted)
# on mined data, a 20k-passage pool (bench/ann_recall.py): ivfpq 0.977 (nprobe 64 of sqrt(n) cells), hnsw 0.983.
RECALL_GOAL = 0.95
NPROBE = 64
EF_SEARCH = 256
# Where IVF-PQ starts to search faster than flat (one thread, 384-d): 1.5x slower at 100k passages, 0.7x at 300k
# (bench/ann_recall.py --timing-sizes); below, the exact index costs no more and finds everything.
FLAT_MAX_POOL = 300_000


class NegativesConfig(BaseModel):
    """How to mine (`m3 negatives` flags, the `mine_hard_negatives` flow's parameters; saved with each run).

    `rank_range` is 1-based and inclusive; `candidates` (the ranked depth) is raised to its end if smaller.
    `absolute_margin` / `relative_margin` (None: off) drop candidates scoring above the query's lowest
    positive score less the margin; `rescore="hybrid"` judges (and orders) them by the hybrid score instead of
    the ranking's (see the module docstring).
    """

    model_config = ConfigDict(extra="forbid")

    mode: MiningMode = "dense"
    rank_range: tuple[int, int] = (2, 200)
    num_negatives: int = Field(15, ge=1)
    seed: int = 42
    teacher_scores: bool = Field(
        False, description="store the interim model's hybrid scores (pos/neg_scores)"
    )
    weights: str | tuple[float, float, float] | None = Field(
        None, description="hybrid weights or a preset name; None: the interim model's profile (else 'short')"
    )
    candidates: int = Field(200, ge=1)
    batch_size: int = Field(32, ge=1)
    query_max_length: int | None = None
    passage_max_length: int | None = None
    absolute_margin: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="drop a candidate scoring above (lowest positive score) - this; None: off",
    )
    relative_margin: float | None = Field(
        None,
        ge=0,
        lt=1,
        allow_inf_nan=False,
        description="drop a candidate scoring above pos - this * |pos| (pos: the lowest positive score; "
        "pos * (1 - this) when pos >= 0); None: off",
    )
    rescore: Literal["hybrid"] | None = Field(
        None,
        description="judge the margins by the hybrid score (modes with a non-zero weight) and order the "
        "negatives by it, hardest first; None: the ranking's own scores and rank order",
    )
    index: Literal["auto", "flat", "hnsw", "ivfpq"] = Field(
        "auto",
        description="the dense index ranking the pool: auto = flat (exact) up to flat_max_pool passages, "
        "ivfpq above; hnsw on request (its multi-threaded build is not bit-reproducible)",
    )
    flat_max_pool: int = Field(
        FLAT_MAX_POOL, ge=0, description="index 'auto': the largest pool ranked exactly (flat)"
    )
    train_sample: int = Field(
        200_000, ge=1, description="ivfpq: pool vectors (drawn with seed) its cells and codebooks learn from"
    )
    nlist: int = Field(
        0,
        ge=0,
        description="ivfpq: k-means cells; 0: sqrt(pool) (larger cells than faiss's 4*sqrt(n): "
        "mining reads deep rankings)",
    )
    nprobe: int = Field(NPROBE, ge=1, description="ivfpq: k-means cells scanned per query")
    ef_search: int = Field(EF_SEARCH, ge=1, description="hnsw: candidate list size (at least the depth)")
    query_shard_size: int = Field(
        4096, ge=1, description="queries searched and sampled at a time (bounds memory; same negatives)"
    )
    recall_queries: int = Field(
        256,
        ge=0,
        description="approximate index: queries (drawn with seed) whose top-100 is checked "
        "against exact search, reported as index_recall; 0: not checked",
    )

    @model_validator(mode="after")
    def _check(self) -> NegativesConfig:
        lo, hi = self.rank_range
        if not 1 <= lo <= hi:
            raise ValueError(f"rank_range {self.rank_range}: need 1 <= start <= end")
        if self.weights is not None:
            resolve_weights(self.weights)
        return self


# Deprecated name (one release): `MiningConfig` is easy to mix up with the data pipeline's `MineConfig`.
MiningConfig = NegativesConfig


@dataclass
class MiningResult:
    """Mined examples, the passage pool they were ranked against, and counts for the log/report."""

    examples: list[Example]
    pool: list[str]
    n_topped_up: int
    n_short: int  # examples left with fewer than num_negatives (pool too small)
    # Passages dropped by the margins as likely false negatives: window candidates, plus random top-up passages
    # rejected for the same reason (distinct per example, summed).
    n_margin_dropped: int = 0
    index: str = "flat"  # the dense index kind that ranked the pool (what index="auto" chose)
    # An approximate index's recall@100 of the exact top-100 on a sample of the queries (None: flat, or not asked)
    index_recall: float | None = None


def dense_index_config(config: NegativesConfig, n_pool: int) -> DenseIndexConfig:
    """The dense index that ranks a pool of ``n_pool`` passages: ``config.index``, or with "auto" the exact
    flat index up to ``flat_max_pool`` passages and IVF-PQ above (trained on ``train_sample`` vectors drawn
    with ``seed``).

    >>> dense_index_config(NegativesConfig(), 5_000).kind, dense_index_config(NegativesConfig(), 10**6).kind
    ('flat', 'ivfpq')
    """
    kind = config.index
    if kind == "auto":
        kind = "flat" if n_pool <= config.flat_max_pool else "ivfpq"
    return DenseIndexConfig(
        kind=kind,
        hnsw_ef_search=config.ef_search,
        ivf_nlist=config.nlist or max(1, math.isqrt(n_pool)),
        ivf_nprobe=config.nprobe,
        train_sample=config.train_sample,
        seed=config.seed,
    )


def needed_outputs(config: NegativesConfig, weights: Weights | None = None) -> tuple[str, ...]:
    """The M3 outputs mining with ``config`` encodes the pool with: dense for the dense ranking alone, plus the
    modes with a non-zero hybrid weight for the hybrid ranking, teacher scores or rescoring. ``weights`` are
    the resolved ones; None with ``config.weights`` None means the model's profile, not known here: all three.

    >>> needed_outputs(NegativesConfig()), needed_outputs(NegativesConfig(teacher_scores=True))
    (('dense',), ('dense', 'sparse', 'colbert'))
    >>> needed_outputs(NegativesConfig(mode="hybrid", weights="1,0.3,0"))
    ('dense', 'sparse')
    """
    if config.mode == "dense" and not config.teacher_scores and not config.rescore:
        return ("dense",)
    if weights is None and config.weights is None:
        return OUTPUTS
    w = weights if weights is not None else resolve_weights(config.weights)
    return tuple(o for o, x in zip(OUTPUTS, w, strict=True) if x or o == "dense")


def check_pool_embeddings(
    emb: Embeddings,
    pool: Sequence[str],
    embedder: Any,
    outputs: Sequence[str],
    config: NegativesConfig,
    source: str = "pool embeddings",
    n_check: int = 8,
) -> None:
    """Raise a ValueError naming ``source`` unless ``emb`` holds the passages of ``pool`` in its order, with
    ``outputs``, as ``embedder`` encodes them: the same count; the same texts when its meta names the corpus
    file it was encoded from (the `encode_corpus` flow's does); and ``n_check`` passages (the first, the last and
    a seeded draw) encoded again here to the same dense vectors (cosine >= 0.99: fp16 or batching shifts them a
    little, another passage, model or max length moves them far)."""
    if len(emb) != len(pool):
        raise ValueError(
            f"{source}: {len(emb)} passages, but the pool has {len(pool)} (the corpus, or the examples' own "
            f"passages, plus every positive, deduplicated in order: m3 negatives --write-pool writes it)"
        )
    missing = [o for o in outputs if o not in emb.outputs]
    if missing:
        raise ValueError(
            f"{source}: lacks output(s) {missing} (has {list(emb.outputs)}); encode the pool with them"
        )
    corpus = emb.meta.get("corpus")
    if isinstance(corpus, str) and Path(corpus).is_file():
        texts = read_corpus(corpus)
        if len(texts) != len(pool) or texts != list(pool):
            first = next((i for i, (a, b) in enumerate(zip(texts, pool, strict=False)) if a != b), None)
            where = f"passage {first} differs" if first is not None else f"{len(texts)} passages"
            raise ValueError(f"{source}: encoded from {corpus}, which is not the pool ({where})")
    rng = np.random.default_rng(config.seed)
    ids = sorted(
        {0, len(pool) - 1, *rng.choice(len(pool), size=min(n_check, len(pool)), replace=False).tolist()}
    )
    again = encode_texts(
        embedder, [pool[i] for i in ids], outputs=("dense",), side="passage",
        batch_size=config.batch_size, max_length=config.passage_max_length,
    ).dense  # fmt: skip
    stored = emb.dense[ids]
    cos = np.sum(again * stored, axis=1) / (np.linalg.norm(again, axis=1) * np.linalg.norm(stored, axis=1))
    bad = [i for i, c in zip(ids, cos, strict=True) if not c >= 0.99]
    if bad:
        raise ValueError(
            f"{source}: passages {bad} are not the pool's passages as this model encodes them (cosine "
            f"{min(cos):.3f}): another pool order, model or passage_max_length ({config.passage_max_length})"
        )


def normalize(text: str) -> str:
    """The form used to compare texts: whitespace collapsed, casefolded.

    >>> normalize("  The  Cat\\n") == normalize("the cat")
    True
    """
    return " ".join(text.split()).casefold()


def margin_threshold(pos_scores: Sequence[float], absolute: float | None, relative: float | None) -> float:
    """The highest score a negative may have: the lowest positive score ``pos`` less each margin given (the
    stricter wins); +inf without margins. The relative margin is a fraction of ``|pos|``: for a negative
    ``pos``, ``pos·(1 − relative)`` would lie *above* the positive and let harder passages through.

    >>> margin_threshold([1.0, 0.75], absolute=0.25, relative=None)
    0.5
    >>> margin_threshold([1.0, 0.75], absolute=0.25, relative=0.5)
    0.375
    >>> margin_threshold([-0.5], absolute=None, relative=0.5)  # below the positive, not -0.25
    -0.75
    >>> margin_threshold([1.0], absolute=None, relative=None)
    inf
    """
    pos = min(pos_scores)
    bounds = [math.inf]
    if absolute is not None:
        bounds.append(pos - absolute)
    if relative is not None:
        bounds.append(pos - relative * abs(pos))
    return min(bounds)


def _untrained_heads(embedder: Any) -> str | None:
    """The model of ``embedder`` when its sparse and ColBERT heads are not trained (a plain backbone: the heads
    are random, so lexical, ColBERT and hybrid scores say nothing), else None; None too when it cannot be told
    (a model built in memory, or an embedder that is not an `M3Embedder`)."""
    from m3core.model import has_trained_heads

    runner = getattr(embedder, "runner", None)
    manifest = getattr(runner, "manifest", None)
    if isinstance(manifest, dict):  # an ONNX export records whether its source had trained heads
        return None if manifest.get("trained_heads", True) else str(runner.directory)
    path = getattr(getattr(embedder, "model", None), "name_or_path", None)  # set by M3Model.from_pretrained
    return path if path is not None and not has_trained_heads(path) else None


def _hybrid(
    q_emb: Embeddings,
    pool_emb: Embeddings,
    qi: int,
    ids: Sequence[int],
    outputs: Sequence[str],
    weights: Weights,
) -> np.ndarray:
    """Query ``qi``'s hybrid scores (w_dense·dense + w_sparse·lex + w_colbert·colbert) of the pool passages
    ``ids``, float64 ``[len(ids)]``; a mode not in ``outputs`` counts 0 (its weight is 0)."""
    from m3core.scoring import hybrid_scores

    ids = np.asarray(ids, dtype=np.int64)
    ms = mode_scores(q_emb, pool_emb, qi, ids, outputs)
    zeros = np.zeros(len(ids), dtype=np.float32)
    parts = [zeros if p is None else p for p in (ms.dense, ms.sparse, ms.colbert)]
    return np.asarray(hybrid_scores(*parts, weights=weights), dtype=np.float64)


def build_pool(examples: Sequence[Example], corpus: Sequence[str] | None) -> list[str]:
    """The corpus (or, without one, every positive and given negative) plus all positives, deduplicated."""
    texts: list[str] = list(corpus) if corpus is not None else [t for e in examples for t in (*e.pos, *e.neg)]
    texts += [p for e in examples for p in e.pos]
    pool, seen = [], set()
    for t in texts:
        if t.strip() and t not in seen:
            seen.add(t)
            pool.append(t)
    if not pool:
        raise ValueError("the passage pool is empty: give a corpus or examples with positives")
    return pool


def _sample(
    ex: Example,
    ranked_ids: np.ndarray,
    pool: list[str],
    norm_pool: list[str],
    cfg: NegativesConfig,
    rng: np.random.Generator,
    score: Callable[[list[int]], np.ndarray] | None = None,
    threshold: float = math.inf,
) -> tuple[list[int], list[int | None], int]:
    """Pick negatives for one example: doc ids, their ranks (None for random top-up) and how many distinct
    passages were dropped for scoring above ``threshold`` by ``score`` (given with margins or rescoring)."""
    lo, hi = cfg.rank_range
    banned = {normalize(p) for p in ex.pos} | {normalize(ex.query)}
    window, seen = [], set(banned)
    for rank, doc in enumerate(ranked_ids[:hi].tolist(), start=1):
        if doc < 0 or rank < lo:
            continue
        key = norm_pool[doc]
        if key not in seen:
            seen.add(key)
            window.append((doc, rank))
    filtering = score is not None and threshold < math.inf
    dropped: set[str] = set()  # normalized texts: a case/space variant of a dropped passage is not recounted
    if filtering and window:
        keep = score([d for d, _ in window]) <= threshold
        dropped = {norm_pool[d] for (d, _), k in zip(window, keep, strict=True) if not k}
        window = [w for w, k in zip(window, keep, strict=True) if k]
    take = min(cfg.num_negatives, len(window))
    picked = [window[i] for i in sorted(rng.choice(len(window), size=take, replace=False))] if take else []
    if cfg.rescore and len(picked) > 1:
        # Hardest first by the re-scoring; the sample is the one drawn in rank order, so rescoring without a
        # margin changes only the order.
        s = score([d for d, _ in picked])
        picked = [picked[i] for i in np.argsort(-s, kind="stable")]
    docs, ranks = [d for d, _ in picked], [r for _, r in picked]
    if len(docs) < cfg.num_negatives:
        # Top-up: random pool passages, but never the skipped top ranks (likely false negatives).
        skipped = {norm_pool[d] for d in ranked_ids[: lo - 1].tolist() if d >= 0}
        chosen = {norm_pool[d] for d in docs}
        for doc in rng.permutation(len(pool)).tolist():
            key = norm_pool[doc]
            if key in banned or key in skipped or key in chosen or key in dropped:
                continue
            if filtering and score([doc])[0] > threshold:
                dropped.add(key)
                continue
            chosen.add(key)
            docs.append(doc)
            ranks.append(None)
            if len(docs) == cfg.num_negatives:
                break
    return docs, ranks, len(dropped)


def _check_recall(index: Any, vectors: np.ndarray, queries: np.ndarray, cfg: NegativesConfig) -> float:
    """Recall@100 of the approximate ``index`` on ``cfg.recall_queries`` of the queries, logged (a warning
    under RECALL_GOAL, naming the parameter that raises it)."""
    from m3core.retrieval.ann_recall import index_recall

    k = min(100, len(vectors))
    report = index_recall(vectors, queries, index, k=k, n_queries=cfg.recall_queries, seed=cfg.seed)
    knob = "ef_search" if report.kind == "hnsw" else "nprobe"
    if report.recall < RECALL_GOAL:
        log.warning("the %s index finds %.3f of the exact top-%d on %d queries (goal %.2f): raise %s (now %d)",
                    report.kind, report.recall, k, report.n_queries, RECALL_GOAL, knob,
                    cfg.ef_search if knob == "ef_search" else cfg.nprobe)  # fmt: skip
    else:
        log.info("the %s index finds %.3f of the exact top-%d on %d queries (worst query %.2f)",
                 report.kind, report.recall, k, report.n_queries, report.min_recall)  # fmt: skip
    return report.recall


def mine_negatives(
    embedder: Any,
    examples: Sequence[Example],
    corpus: Sequence[str] | None = None,
    config: NegativesConfig | None = None,
    model_id: str | None = None,
    cache_dir: str | Path | None = None,
    pool_embeddings: Embeddings | str | Path | None = None,
) -> MiningResult:
    """Mine hard negatives for ``examples`` with ``embedder`` (an `M3Embedder` of the interim model).

    ``pool_embeddings``: the pool already encoded by this model (an `Embeddings` or its directory, e.g. the
    `encode_corpus` flow's merged shards of `write_pool`'s file), used instead of encoding it here after
    `check_pool_embeddings`; ``cache_dir`` is then not used for the pool."""
    cfg = config or NegativesConfig()
    if not examples:
        raise ValueError("no examples to mine negatives for")
    for i, ex in enumerate(examples):
        if not ex.query.strip() or not ex.pos or not all(p.strip() for p in ex.pos):
            raise ValueError(f"example {i}: needs a non-empty query and at least one non-empty positive")
    weights = model_weights(embedder, cfg.weights)
    if cfg.rescore == "hybrid" and (weights[1] or weights[2]):
        # Checked before any encoding: random heads would make the judge (and the order) noise.
        plain = _untrained_heads(embedder)
        if plain is not None:
            raise ValueError(
                f"rescore='hybrid': {plain} has no trained sparse/ColBERT heads (a plain backbone), so its hybrid "
                f"score (weights {weights}) means nothing; leave rescore off or give weights '1,0,0'"
            )
    pool = build_pool(examples, corpus)
    norm_pool = [normalize(t) for t in pool]
    outputs_t = needed_outputs(cfg, weights)
    common = {"outputs": outputs_t, "batch_size": cfg.batch_size, "model_id": model_id}
    if pool_embeddings is None:
        pool_emb = encode_texts(
            embedder, pool, side="passage", max_length=cfg.passage_max_length,
            cache_dir=None if cache_dir is None else Path(cache_dir) / "pool", **common,
        )  # fmt: skip
    else:
        given = pool_embeddings
        pool_emb = given if isinstance(given, Embeddings) else Embeddings.load(given)
        source = "pool embeddings" if isinstance(given, Embeddings) else f"pool embeddings {given}"
        check_pool_embeddings(pool_emb, pool, embedder, outputs_t, cfg, source)
        pool_emb = Embeddings(  # only the outputs this run uses (no sparse index built for a dense ranking)
            dense=pool_emb.dense,
            lexical=pool_emb.lexical if "sparse" in outputs_t else None,
            colbert=pool_emb.colbert if "colbert" in outputs_t else None,
            meta=pool_emb.meta,
        )
    q_emb = encode_texts(
        embedder, [e.query for e in examples], side="query", max_length=cfg.query_max_length, **common
    )
    depth = max(cfg.rank_range[1], 1)
    index = dense_index_config(cfg, len(pool))
    log.info("ranking a pool of %d passages with a %s dense index", len(pool), index.kind)
    retriever = Retriever(
        pool_emb, RetrieverConfig(weights=weights, candidates=max(cfg.candidates, depth), dense_index=index)
    )
    search_mode: Mode = "dense" if cfg.mode == "dense" else "all"
    recall = None
    if index.kind != "flat" and cfg.recall_queries:
        recall = _check_recall(retriever.dense, pool_emb.dense, q_emb.dense, cfg)

    index_of = {t: i for i, t in enumerate(pool)}
    margins = cfg.absolute_margin is not None or cfg.relative_margin is not None
    # The margins compare the ranking's own scores (dense, or the hybrid the retriever ranked by), or the hybrid
    # when rescoring; one function scores the positives and the candidates alike, so they are comparable.
    hybrid_scored = cfg.mode == "hybrid" or cfg.rescore == "hybrid"

    def query_scores(qi: int, ids: list[int]) -> np.ndarray:
        if hybrid_scored:
            return _hybrid(q_emb, pool_emb, qi, ids, outputs_t, weights)
        return mode_scores(q_emb, pool_emb, qi, np.asarray(ids), ("dense",)).dense.astype(np.float64)

    out: list[Example] = []
    n_topped = n_short = n_dropped = 0
    for qi, ex in enumerate(examples):
        if qi % cfg.query_shard_size == 0:  # the next shard of queries: search it, keep only its rankings
            shard = range(qi, min(qi + cfg.query_shard_size, len(examples)))
            _, ranked = retriever.search(
                q_emb.take(shard), search_mode, k=min(depth, len(pool)), weights=weights
            )
        rng = np.random.default_rng([cfg.seed, qi])
        score, threshold = None, math.inf
        if margins or cfg.rescore:
            score = partial(query_scores, qi)
            pos_scores = score([index_of[p] for p in ex.pos])
            threshold = margin_threshold(pos_scores.tolist(), cfg.absolute_margin, cfg.relative_margin)
        docs, ranks, dropped = _sample(
            ex, ranked[qi - shard.start], pool, norm_pool, cfg, rng, score, threshold
        )
        n_dropped += dropped
        n_topped += any(r is None for r in ranks)
        n_short += len(docs) < cfg.num_negatives
        mined = Example(
            query=ex.query, pos=list(ex.pos), neg=[pool[d] for d in docs], neg_ranks=ranks,
            prompt=ex.prompt, type=ex.type, lang=ex.lang, pair_ids=list(ex.pair_ids),
        )  # fmt: skip
        if cfg.teacher_scores:
            ids = [index_of[p] for p in ex.pos] + docs
            teacher = _hybrid(q_emb, pool_emb, qi, ids, outputs_t, weights).tolist()
            mined.pos_scores, mined.neg_scores = teacher[: len(ex.pos)], teacher[len(ex.pos) :]
        out.append(mined)
    if n_topped:
        log.warning("%d of %d examples had too few candidates in ranks %s: topped up with random passages",
                    n_topped, len(out), cfg.rank_range)  # fmt: skip
    if n_short:
        log.warning("%d examples have fewer than %d negatives: the pool (%d passages) is too small%s",
                    n_short, cfg.num_negatives, len(pool),
                    " or the margins drop too much of it" if margins else "")  # fmt: skip
    if margins:
        log.info("%d candidates scored within the margin of their positive and were dropped as likely false "
                 "negatives (absolute_margin %s, relative_margin %s, %s scores)", n_dropped,
                 cfg.absolute_margin, cfg.relative_margin, "hybrid" if hybrid_scored else "dense")  # fmt: skip
    return MiningResult(out, pool, n_topped, n_short, n_dropped, index.kind, recall)


# ---------------------------------------------------------------------------------------------- I/O
def read_examples(path: str | Path) -> list[Example]:
    """FlagEmbedding JSONL (a file or a directory of them), read and validated by the one reader training uses
    (`m3core.data.examples.read_jsonl`: a bad line is an error `file:line: reason`). ``prompt``/``type``/``lang``
    are kept; teacher scores are dropped (they score the input's negatives, which mining replaces)."""
    examples, _ = read_jsonl(path)
    if not examples:
        raise ValueError("the training data has no examples")
    return [replace(e, pos_scores=None, neg_scores=None) for e in examples]


def mine(*args: Any, **kwargs: Any) -> MiningResult:
    """Deprecated alias of `mine_negatives` (one release): the data pipeline has a `mine` too."""
    import warnings

    warnings.warn("m3core.negatives.mine is deprecated: use mine_negatives", DeprecationWarning, stacklevel=2)
    return mine_negatives(*args, **kwargs)


def mine_file(
    embedder: Any,
    train_file: str | Path,
    out_file: str | Path,
    config: NegativesConfig | None = None,
    *,
    corpus: Sequence[str] | None = None,
    model_id: str | None = None,
    cache_dir: str | Path | None = None,
    pool_embeddings: Embeddings | str | Path | None = None,
) -> dict[str, Any]:
    """Negatives for every line of a FlagEmbedding JSONL file, written as FlagEmbedding JSONL: what
    `m3 negatives --input F --output O` and the `mine_hard_negatives` flow do. Returns the run's counts.
    ``pool_embeddings``: the pool encoded already (`mine_negatives`; `write_pool` writes its texts)."""
    result = mine_negatives(
        embedder, read_examples(train_file), corpus, config, model_id=model_id, cache_dir=cache_dir,
        pool_embeddings=pool_embeddings,
    )  # fmt: skip
    write_jsonl(result.examples, out_file)
    return {
        "file": str(out_file),
        "examples": len(result.examples),
        "pool": len(result.pool),
        "index": result.index,
        "index_recall": result.index_recall,
        "topped_up": result.n_topped_up,
        "short": result.n_short,
        "margin_dropped": result.n_margin_dropped,
    }


def write_pool(
    examples: Sequence[Example] | str | Path, out_file: str | Path, corpus: Sequence[str] | None = None
) -> int:
    """Write the passage pool mining ``examples`` (or a FlagEmbedding JSONL file of them) with ``corpus`` ranks,
    as a corpus JSONL (``{"text": ...}`` a line; `read_corpus` reads it back exactly), for encoding it elsewhere
    (the `encode_corpus` flow's shards) and passing the result as ``pool_embeddings``. Returns its size."""
    if isinstance(examples, (str, Path)):
        examples = read_examples(examples)
    pool = build_pool(examples, corpus)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for text in pool:
            fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return len(pool)


def examples_from_warehouse(
    con: Any, kinds: Sequence[str] | None = None, langs: Sequence[str] | None = None, limit: int | None = None
) -> list[Example]:
    """Examples from the `pairs` table: one per distinct query, all its positives (optionally filtered)."""
    where, params = [], []
    if kinds:
        where.append(f"kind IN ({','.join('?' * len(kinds))})")
        params += list(kinds)
    if langs:
        where.append(f"lang IN ({','.join('?' * len(langs))})")
        params += list(langs)
    sql = (
        "SELECT query, list(DISTINCT positive ORDER BY positive), any_value(lang), list(pair_id ORDER BY pair_id) "
        f"FROM pairs {'WHERE ' + ' AND '.join(where) if where else ''} GROUP BY query ORDER BY query"
    )
    if limit:
        sql += f" LIMIT {int(limit)}"
    rows = con.execute(sql, params).fetchall()
    return [Example(query=q, pos=list(p), lang=lang, pair_ids=list(ids)) for q, p, lang, ids in rows]


def corpus_from_warehouse(con: Any, langs: Sequence[str] | None = None) -> list[str]:
    """Every distinct positive of the `pairs` table (optionally of some languages) as the passage pool."""
    if langs:
        q = f"SELECT DISTINCT positive FROM pairs WHERE lang IN ({','.join('?' * len(langs))}) ORDER BY 1"
        return [r[0] for r in con.execute(q, list(langs)).fetchall()]
    return [r[0] for r in con.execute("SELECT DISTINCT positive FROM pairs ORDER BY 1").fetchall()]


def write_warehouse(
    warehouse: Any, result: MiningResult, config: NegativesConfig, model_id: str, run_id: str | None = None
) -> str:
    """Insert a mining run and its examples into the warehouse (namespace "negatives"); returns the run id."""
    import pyarrow as pa

    warehouse.migrate("negatives", MIGRATIONS)
    now = datetime.now(UTC).replace(tzinfo=None)
    run_id = run_id or hashlib.sha256(f"{model_id}|{now.isoformat()}".encode()).hexdigest()[:16]
    exs = result.examples
    table = pa.table({
        "example_id": [hashlib.sha256(f"{run_id}|{e.query}".encode()).hexdigest()[:32] for e in exs],
        "run_id": [run_id] * len(exs),
        "query": [e.query for e in exs],
        "pos": [e.pos for e in exs],
        "neg": [e.neg for e in exs],
        "neg_ranks": pa.array([e.neg_ranks for e in exs], type=pa.list_(pa.int32())),
        "pos_scores": pa.array([e.pos_scores for e in exs], type=pa.list_(pa.float64())),
        "neg_scores": pa.array([e.neg_scores for e in exs], type=pa.list_(pa.float64())),
        "pair_ids": pa.array([e.pair_ids for e in exs], type=pa.list_(pa.string())),
        "lang": pa.array([e.lang for e in exs], type=pa.string()),
        "prompt": pa.array([e.prompt for e in exs], type=pa.string()),
        "type": pa.array([e.type for e in exs], type=pa.string()),
        "created_at": [now] * len(exs),
    })  # fmt: skip
    con = warehouse.con
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "INSERT INTO mining_runs (run_id, model, config, n_examples, n_topped_up, n_margin_dropped, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [run_id, model_id, config.model_dump_json(), len(exs), result.n_topped_up,
             result.n_margin_dropped, now],
        )  # fmt: skip
        con.register("_mined", table)
        con.execute("INSERT INTO hard_negatives BY NAME SELECT * FROM _mined")
        con.unregister("_mined")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    log.info("warehouse %s: mining run %s with %d examples", warehouse.path, run_id, len(exs))
    return run_id
