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
from m3core.evaluation.metrics import METRICS, evaluate_run
from m3core.retrieval.corpus import cache_key, encode_texts
from m3core.retrieval.dense import DenseIndexConfig
from m3core.retrieval.retriever import MODES, Retriever, RetrieverConfig, outputs_for

log = logging.getLogger(__name__)

BM25 = "bm25"


@dataclass
class EvalConfig:
    """What to evaluate. ``weights``: hybrid preset ("short"/"long") or (w_dense, w_sparse, w_colbert)."""

    modes: tuple[str, ...] = MODES
    bm25: bool = True
    k: int = 100
    candidates: int = 200
    weights: str | tuple[float, float, float] = "short"
    batch_size: int = 32
    query_max_length: int | None = None
    passage_max_length: int | None = None
    cache_dir: Path | None = None
    metrics: tuple[str, ...] = METRICS
    passage_instruction: str | None = None  # prefix for passages (e5-style models want "passage: ")
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


def evaluate_set(
    embedder: Any, es: EvalSet, config: EvalConfig, model_id: str | None = None
) -> dict[str, Any]:
    """Metrics of every configured mode (and BM25) on one set, with per-mode search seconds."""
    doc_ids, query_ids = list(es.corpus), list(es.queries)
    results: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    if config.modes:
        outputs = outputs_for(list(config.modes))
        passages = [(config.passage_instruction or "") + es.corpus[d] for d in doc_ids]
        query_texts = [es.queries[q] for q in query_ids]

        def cache_for(texts: list[str], side: str, max_length: int | None) -> Path | None:
            # Keyed by content, not by set name: cross-lingual sets share one corpus (e.g. English pages),
            # which is then encoded once.
            if config.cache_dir is None:
                return None
            key = cache_key(model_id or "", texts, outputs, max_length, side)
            return Path(config.cache_dir) / f"{side}-{key[:20]}"

        t0 = time.perf_counter()
        corpus = encode_texts(
            embedder,
            passages,
            outputs=outputs,
            side="passage",
            batch_size=config.batch_size,
            max_length=config.passage_max_length,
            cache_dir=cache_for(passages, "passage", config.passage_max_length),
            model_id=model_id,
        )
        queries = encode_texts(
            embedder,
            query_texts,
            outputs=outputs,
            side="query",
            batch_size=config.batch_size,
            max_length=config.query_max_length,
            cache_dir=cache_for(query_texts, "query", config.query_max_length),
            model_id=model_id,
        )
        seconds["encode"] = time.perf_counter() - t0
        retriever = Retriever(
            corpus,
            RetrieverConfig(
                weights=config.weights, candidates=config.candidates, dense_index=config.dense_index
            ),
        )
        for mode in config.modes:
            t0 = time.perf_counter()
            scores, ids = retriever.search(queries, mode, k=config.k)
            seconds[mode] = time.perf_counter() - t0
            results[mode] = evaluate_run(
                es.qrels, ids_to_run(query_ids, doc_ids, scores, ids), config.metrics
            )
    if config.bm25:
        t0 = time.perf_counter()
        run = BM25Index(es.corpus).search(es.queries, k=config.k)
        seconds[BM25] = time.perf_counter() - t0
        results[BM25] = evaluate_run(es.qrels, run, config.metrics)
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
        "seconds": seconds,
    }


def _mean(entries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    modes = {m for e in entries for m in e["results"]}
    for mode in modes:
        have = [e["results"][mode] for e in entries if mode in e["results"]]
        out[mode] = {k: float(np.mean([h[k] for h in have])) for k in have[0]}
    return out


def evaluate(
    embedder: Any, sets: Sequence[EvalSet], config: EvalConfig | None = None, model_id: str | None = None
) -> dict[str, Any]:
    """The full report over ``sets`` (``embedder`` may be None when only BM25 is asked for)."""
    config = config or EvalConfig()
    if embedder is None and config.modes:
        raise ValueError(f"modes {list(config.modes)} need a model; pass one or evaluate only bm25")
    if not sets:
        raise ValueError("no eval sets to evaluate")
    entries = [evaluate_set(embedder, es, config, model_id) for es in sets]
    kinds = sorted({e["kind"] for e in entries})
    cfg = asdict(config)
    cfg["cache_dir"] = None if config.cache_dir is None else str(config.cache_dir)
    return {
        "model": model_id,
        "config": cfg,
        "metrics": list(config.metrics),
        "modes": [*config.modes, *([BM25] if config.bm25 else [])],
        "sets": entries,
        "average": _mean(entries),
        "average_by_kind": {k: _mean([e for e in entries if e["kind"] == k]) for k in kinds},
    }
