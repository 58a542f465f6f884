"""Evaluate an M3 model on BEIR-layout sets in every retrieval mode, per language and averaged, next to BM25.

The report is a plain dict (JSON-ready): one entry per set with its metrics per mode, the macro-average
over sets, and the averages per set kind (monolingual / cross-lingual).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m3core.evaluation.beir import EvalSet
from m3core.evaluation.bm25 import BM25Index
from m3core.evaluation.metrics import METRICS
from m3core.evaluation.metrics import per_query as per_query_metrics
from m3core.modes import MODES, Mode, outputs_for
from m3core.retrieval.corpus import Embeddings, cache_key, encode_texts
from m3core.retrieval.dense import DenseIndexConfig
from m3core.retrieval.hybrid import model_weights
from m3core.retrieval.retriever import Retriever, RetrieverConfig

log = logging.getLogger(__name__)

BM25 = "bm25"


@dataclass
class EvalConfig:
    """What to evaluate. ``weights``: hybrid preset ("short"/"long"), (w_dense, w_sparse, w_colbert), or None for
    the model's own (its profile's `hybrid_weights`, chosen on a dev split; `short` when it has none)."""

    modes: tuple[Mode, ...] = MODES
    bm25: bool = True
    k: int = 100
    candidates: int = 200
    weights: str | tuple[float, float, float] | None = None
    batch_size: int = 32
    query_max_length: int | None = None
    passage_max_length: int | None = None
    cache_dir: Path | None = None
    metrics: tuple[str, ...] = METRICS
    # MCLS for the corpus (long documents, `m3core.mcls`); queries are encoded plainly.
    mcls: bool = False
    dense_index: DenseIndexConfig = field(default_factory=DenseIndexConfig)

    def __post_init__(self) -> None:
        outputs_for(list(self.modes))  # validates the mode names
        if self.k < 10:
            raise ValueError(f"k={self.k}: must be >= 10 so that nDCG@10 and MRR@10 are defined")


def ids_to_run(query_ids: Sequence[str], doc_ids: Sequence[str], scores: np.ndarray, ids: np.ndarray) -> dict:
    """``(scores[nq, k], ids[nq, k])`` positions -> ``{query_id: {doc_id: score}}`` (empty slots dropped)."""
    return {
        q: {doc_ids[d]: float(s) for s, d in zip(scores[i], ids[i], strict=True) if d >= 0}
        for i, q in enumerate(query_ids)
    }


def encode_set(
    embedder: Any, es: EvalSet, config: EvalConfig, outputs: tuple[str, ...], model_id: str | None = None
) -> tuple[list[str], list[str], Embeddings, Embeddings]:
    """``(query_ids, doc_ids, queries, corpus)`` of one set, encoded with ``outputs`` (cached when configured).

    The embedder applies the model's query/passage prompts (its profile) in encode_queries/encode_corpus.
    """
    doc_ids, query_ids = list(es.corpus), list(es.queries)
    passages = [es.corpus[d] for d in doc_ids]
    query_texts = [es.queries[q] for q in query_ids]

    def cache_for(texts: list[str], side: str, max_length: int | None) -> Path | None:
        # Keyed by content, not by set name: cross-lingual sets share one corpus (e.g. English pages),
        # which is then encoded once.
        if config.cache_dir is None:
            return None
        key = cache_key(model_id or "", texts, outputs, max_length, side, config.mcls and side == "passage")
        return Path(config.cache_dir) / f"{side}-{key[:20]}"

    common = {"outputs": outputs, "batch_size": config.batch_size, "model_id": model_id}
    corpus = encode_texts(
        embedder, passages, side="passage", max_length=config.passage_max_length,
        cache_dir=cache_for(passages, "passage", config.passage_max_length), mcls=config.mcls, **common,
    )  # fmt: skip
    queries = encode_texts(
        embedder, query_texts, side="query", max_length=config.query_max_length,
        cache_dir=cache_for(query_texts, "query", config.query_max_length), **common,
    )  # fmt: skip
    return query_ids, doc_ids, queries, corpus


def evaluate_set(
    embedder: Any, es: EvalSet, config: EvalConfig, model_id: str | None = None
) -> dict[str, Any]:
    """Metrics of every configured mode (and BM25) on one set, with per-mode search seconds."""
    results: dict[str, dict[str, float]] = {}
    per_query: dict[str, dict[str, float]] = {}  # mode -> query id -> the first metric (paired comparisons)
    nonempty: dict[str, float] | None = None  # share of texts with any lexical weight
    seconds: dict[str, float] = {}
    if config.modes:
        t0 = time.perf_counter()
        query_ids, doc_ids, queries, corpus = encode_set(
            embedder, es, config, outputs_for(list(config.modes)), model_id
        )
        seconds["encode"] = time.perf_counter() - t0
        if corpus.lexical is not None:
            # A dead sparse head (ReLU stuck at 0) shows as empty lexical weights, not as an error.
            nonempty = {
                "passages": float(np.mean([bool(w) for w in corpus.lexical])),
                "queries": float(np.mean([bool(w) for w in queries.lexical])),
            }
        retriever = Retriever(
            corpus,
            RetrieverConfig(
                weights=model_weights(embedder, config.weights),
                candidates=config.candidates,
                dense_index=config.dense_index,
            ),
        )
        for mode in config.modes:
            t0 = time.perf_counter()
            scores, ids = retriever.search(queries, mode, k=config.k)
            seconds[mode] = time.perf_counter() - t0
            results[mode], per_query[mode] = _score(es, ids_to_run(query_ids, doc_ids, scores, ids), config)
    if config.bm25:
        t0 = time.perf_counter()
        run = BM25Index(es.corpus).search(es.queries, k=config.k)
        seconds[BM25] = time.perf_counter() - t0
        results[BM25], per_query[BM25] = _score(es, run, config)
    log.info(
        "%s: %s",
        es.label,
        ", ".join(f"{m} nDCG@10={r.get('ndcg@10', float('nan')):.3f}" for m, r in results.items()),
    )
    return {
        "name": es.name,
        "label": es.label,
        "kind": es.meta.get("kind", "monolingual"),
        "lang": es.meta.get("lang"),
        "query_lang": es.meta.get("query_lang"),
        "corpus_lang": es.meta.get("corpus_lang"),
        "n_queries": len(es.queries),
        "n_docs": len(es.corpus),
        "results": results,
        "per_query": per_query,
        "nonempty_lexical": nonempty,
        "seconds": seconds,
    }


def _score(es: EvalSet, run: dict, config: EvalConfig) -> tuple[dict[str, float], dict[str, float]]:
    """Mean metrics of a run, and the first metric per judged query (for paired bootstrap intervals)."""
    values = per_query_metrics(es.qrels, run, config.metrics)
    if not any(values[m] for m in config.metrics):
        raise ValueError(f"{es.label}: qrels has no query with a relevant document: nothing to evaluate")
    means = {m: sum(v.values()) / len(v) for m, v in values.items()}
    return means, values[config.metrics[0]]


def _mean(entries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    modes = {m for e in entries for m in e["results"]}
    for mode in modes:
        have = [e["results"][mode] for e in entries if mode in e["results"]]
        out[mode] = {k: float(np.mean([h[k] for h in have])) for k in have[0]}
    return out


def evaluate(
    embedder: Any,
    sets: Sequence[EvalSet],
    config: EvalConfig | None = None,
    model_id: str | None = None,
    failures: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """The full report over ``sets`` (``embedder`` may be None when only BM25 is asked for).

    A set that fails to evaluate is reported under `failed_sets` with its reason (with `failures`, the sets that
    did not even load, from `load_eval_sets(..., failures=)`) and the others are still evaluated; when none is
    left, a ValueError lists every reason.
    """
    config = config or EvalConfig()
    if embedder is None and config.modes:
        raise ValueError(f"modes {list(config.modes)} need a model; pass one or evaluate only bm25")
    failed = list(failures)
    if not sets and not failed:
        raise ValueError("no eval sets to evaluate")
    entries = []
    for es in sets:
        try:
            entries.append(evaluate_set(embedder, es, config, model_id))
        except (ValueError, AssertionError, IndexError, KeyError) as err:  # this set's data, not the model
            reason = f"{type(err).__name__}: {err}" if not isinstance(err, ValueError) else str(err)
            log.warning("eval set %s: failed, the others go on: %s", es.name, reason)
            failed.append({"name": es.name, "path": str(es.path or ""), "reason": reason})
    if not entries:
        raise ValueError(
            "no eval set could be evaluated: " + "; ".join(f"{f['name']}: {f['reason']}" for f in failed)
        )
    kinds = sorted({e["kind"] for e in entries})
    cfg = asdict(config)
    cfg["cache_dir"] = None if config.cache_dir is None else str(config.cache_dir)
    return {
        "model": model_id,
        "config": cfg,
        "metrics": list(config.metrics),
        "modes": [*config.modes, *([BM25] if config.bm25 else [])],
        "hybrid_weights": list(model_weights(embedder, config.weights)) if config.modes else None,
        "sets": entries,
        "failed_sets": failed,
        "average": _mean(entries),
        "average_by_kind": {k: _mean([e for e in entries if e["kind"] == k]) for k in kinds},
    }
