"""Choose the hybrid weights (w_dense, w_sparse, w_colbert) a model is served with, on a dev split.

The paper's presets (short 1 / 0.3 / 1, long 0.15 / 0.5 / 0.35) were tuned for BGE-M3 on MIRACL and MLDR; on
another backbone and data the trained ColBERT head can be the strongest mode and those weights leave `all` at
or below it. So after training, each candidate triple of a small grid is scored on the *dev* split (never the
test split the promotion decision reads): every dev query's candidates (the union of its dense and sparse top
`candidates`, exactly what `all` re-scores) are scored once per mode, then each triple's ranking is one weighted
sum away. The best triple (macro nDCG@10 over the dev sets) is saved in the model's profile
(`m3_config.json` `hybrid_weights`), which `m3 eval`, hard-negative mining and the pyfunc's users then read.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m3core.config import CONFIG_NAME, M3Config
from m3core.evaluation.beir import EvalSet
from m3core.evaluation.evaluate import EvalConfig, encode_set
from m3core.evaluation.metrics import evaluate_run
from m3core.modes import HYBRID_PRESETS, OUTPUTS, Weights
from m3core.retrieval.hybrid import mode_scores, union_candidates
from m3core.retrieval.retriever import Retriever, RetrieverConfig

log = logging.getLogger(__name__)

METRIC = "ndcg@10"
# Weights are scale-free for ranking, so the grid fixes nothing but relative sizes; it holds the paper's presets
# and their neighbourhood. No weight is 0: `all` is the hybrid of all three modes (a zero would make it a single
# mode or a pair under another name, and `dense+sparse`, which serves with (w_dense, w_sparse), degenerate).
DENSE_GRID = (0.25, 0.5, 1.0)
SPARSE_GRID = (0.1, 0.3, 0.5, 1.0)
COLBERT_GRID = (0.25, 0.5, 1.0, 2.0)
PAPER_SHORT: Weights = HYBRID_PRESETS["short"]


def default_grid() -> list[Weights]:
    """Every triple of the grids, without scale duplicates (``(0.5, 0.5, 0.5)`` ≡ ``(1, 1, 1)``).

    >>> grid = default_grid(); (1.0, 0.3, 1.0) in grid, (0.15, 0.5, 0.35) in grid, len(grid)
    (True, True, 43)
    """
    seen, out = set(), []
    for w in [*itertools.product(DENSE_GRID, SPARSE_GRID, COLBERT_GRID), *HYBRID_PRESETS.values()]:
        key = tuple(round(x / max(w), 6) for x in w)
        if key not in seen:
            seen.add(key)
            out.append(tuple(float(x) for x in w))
    return out


@dataclass
class WeightChoice:
    """The chosen weights, their dev score, and every candidate's score (for the report)."""

    weights: Weights
    score: float
    paper_short: float
    scores: dict[Weights, float]
    n_sets: int
    n_queries: int

    def to_json(self) -> dict[str, Any]:
        top = sorted(self.scores.items(), key=lambda kv: -kv[1])[:10]
        return {
            "weights": list(self.weights),
            f"dev_{METRIC}": self.score,
            f"dev_{METRIC}_paper_short": self.paper_short,
            "n_sets": self.n_sets,
            "n_queries": self.n_queries,
            "top": [{"weights": list(w), f"dev_{METRIC}": s} for w, s in top],
        }


def _set_scores(
    embedder: Any, es: EvalSet, config: EvalConfig, grid: Sequence[Weights], model_id: str | None
) -> np.ndarray:
    """nDCG@10 of every grid triple on one set, ``[len(grid)]``."""
    query_ids, doc_ids, queries, corpus = encode_set(embedder, es, config, OUTPUTS, model_id)
    retriever = Retriever(
        corpus, RetrieverConfig(candidates=config.candidates, dense_index=config.dense_index)
    )
    _, dense_ids = retriever.dense.search(queries.dense, config.candidates)
    _, sparse_ids = retriever.sparse.search(queries.lexical, config.candidates)
    candidates = union_candidates(dense_ids, sparse_ids)
    per_query = [mode_scores(queries, corpus, qi, ids, OUTPUTS) for qi, ids in enumerate(candidates)]
    W = np.asarray(grid, dtype=np.float32)  # [G, 3]
    runs: list[dict[str, dict[str, float]]] = [{} for _ in grid]
    for qid, ms in zip(query_ids, per_query, strict=True):
        if len(ms.ids) == 0:
            continue
        total = W @ np.stack([ms.dense, ms.sparse, ms.colbert])  # [G, n_candidates]
        top = np.argsort(-total, axis=1, kind="stable")[:, :10]
        for g in range(len(grid)):
            runs[g][qid] = {doc_ids[ms.ids[j]]: float(total[g, j]) for j in top[g]}
    return np.array([evaluate_run(es.qrels, run, (METRIC,))[METRIC] for run in runs])


def choose_weights(
    embedder: Any,
    dev_sets: Sequence[EvalSet],
    config: EvalConfig | None = None,
    grid: Sequence[Weights] | None = None,
    model_id: str | None = None,
) -> WeightChoice:
    """The grid triple with the best macro nDCG@10 over ``dev_sets`` (ties: the one nearest the paper's)."""
    if not dev_sets:
        raise ValueError("no dev sets to choose hybrid weights on (export the dev split: which='dev')")
    config = config or EvalConfig()
    grid = list(grid or default_grid())
    if PAPER_SHORT not in grid:
        grid.append(PAPER_SHORT)
    per_set = np.stack([_set_scores(embedder, es, config, grid, model_id) for es in dev_sets])  # [S, G]
    mean = per_set.mean(axis=0)
    paper = np.asarray(PAPER_SHORT) / max(PAPER_SHORT)

    def distance(w: Weights) -> float:
        return float(np.abs(np.asarray(w) / max(w) - paper).sum())

    best = max(range(len(grid)), key=lambda g: (round(float(mean[g]), 6), -distance(grid[g])))
    choice = WeightChoice(
        weights=grid[best],
        score=float(mean[best]),
        paper_short=float(mean[grid.index(PAPER_SHORT)]),
        scores={w: float(m) for w, m in zip(grid, mean, strict=True)},
        n_sets=len(dev_sets),
        n_queries=sum(len(es.queries) for es in dev_sets),
    )
    log.info(
        "hybrid weights %s: dev %s %.4f (paper's 1/0.3/1: %.4f) over %d sets, %d queries",
        choice.weights, METRIC, choice.score, choice.paper_short, choice.n_sets, choice.n_queries,
    )  # fmt: skip
    return choice


def save_weights(
    model_dir: str | Path,
    embedder: Any,
    dev_sets: Sequence[EvalSet],
    config: EvalConfig | None = None,
    model_id: str | None = None,
) -> WeightChoice:
    """`choose_weights`, then write them into the model's profile (`m3_config.json`) and `hybrid_weights.json`."""
    choice = choose_weights(embedder, dev_sets, config, model_id=model_id)
    model_dir = Path(model_dir)
    saved = M3Config.load(model_dir)
    if saved is None:
        raise ValueError(f"{model_dir}: no {CONFIG_NAME}; save the model with M3Model.save_pretrained first")
    saved.hybrid_weights = choice.weights
    saved.save(model_dir)
    (model_dir / "hybrid_weights.json").write_text(json.dumps(choice.to_json(), indent=2) + "\n")
    return choice
