"""Retrieval metrics: nDCG@k, Recall@k, MRR@k over TREC-style qrels and runs.

Written by hand (a few lines each) rather than taken from ranx/pytrec_eval so that `m3core` evaluation needs
no numba/C extension at run time; the tests check every function against ranx on random runs.

Conventions (the same as pytrec_eval and ranx's defaults, so numbers compare with published BEIR tables):

- ``qrels``: ``{query_id: {doc_id: relevance}}``; a document is relevant when its relevance is > 0.
- ``run``: ``{query_id: {doc_id: score}}``; documents are ranked by descending score, ties broken by doc id
  so a ranking is deterministic.
- nDCG uses linear gain (``rel / log2(rank + 1)``), the ideal ranking taken from the qrels.
- Queries without any relevant document are left out of the mean (they have no defined nDCG/recall);
  a query with relevant documents but no run entry scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Qrels = Mapping[str, Mapping[str, float]]
Run = Mapping[str, Mapping[str, float]]

METRICS = ("ndcg@10", "recall@100", "mrr@10")


def ranked(scores: Mapping[str, float], k: int | None = None) -> list[str]:
    """Doc ids by descending score (ties: ascending doc id), cut at ``k``.

    >>> ranked({"b": 1.0, "a": 1.0, "c": 2.0})
    ['c', 'a', 'b']
    """
    order = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [doc_id for doc_id, _ in order[:k]]


def ndcg_at_k(rels: Mapping[str, float], scores: Mapping[str, float], k: int) -> float:
    """nDCG@k of one query with linear gain.

    >>> round(ndcg_at_k({"a": 1}, {"x": 2.0, "a": 1.0}, 10), 4)  # relevant doc at rank 2: 1/log2(3)
    0.6309
    """
    dcg = sum(
        rels.get(d, 0.0) / math.log2(i + 2) for i, d in enumerate(ranked(scores, k)) if rels.get(d, 0) > 0
    )
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(rels: Mapping[str, float], scores: Mapping[str, float], k: int) -> float:
    """Share of the relevant documents found in the top ``k``.

    >>> recall_at_k({"a": 1, "b": 1}, {"a": 0.5, "c": 0.9}, 100)
    0.5
    """
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked(scores, k))) / len(relevant)


def mrr_at_k(rels: Mapping[str, float], scores: Mapping[str, float], k: int) -> float:
    """Reciprocal rank of the first relevant document in the top ``k`` (0 when none).

    >>> mrr_at_k({"a": 1}, {"x": 3.0, "y": 2.0, "a": 1.0}, 10)
    0.3333333333333333
    """
    for i, d in enumerate(ranked(scores, k)):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


_FUNCS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}


def _parse(metric: str) -> tuple[str, int]:
    name, sep, k = metric.partition("@")
    if name not in _FUNCS or not sep or not k.isdigit() or int(k) < 1:
        raise ValueError(
            f"unknown metric {metric!r}: expected one of {sorted(_FUNCS)} followed by @k, e.g. ndcg@10"
        )
    return name, int(k)


def per_query(qrels: Qrels, run: Run, metrics: tuple[str, ...] = METRICS) -> dict[str, dict[str, float]]:
    """``{metric: {query_id: value}}`` for every query of ``qrels`` that has a relevant document."""
    parsed = {m: _parse(m) for m in metrics}
    out: dict[str, dict[str, float]] = {m: {} for m in metrics}
    for qid, rels in qrels.items():
        if not any(r > 0 for r in rels.values()):
            continue
        scores = run.get(qid, {})
        for m, (name, k) in parsed.items():
            out[m][qid] = _FUNCS[name](rels, scores, k)
    return out


def evaluate_run(qrels: Qrels, run: Run, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    """Mean of each metric over the judged queries (queries with at least one relevant document).

    >>> evaluate_run({"q": {"a": 1}}, {"q": {"a": 1.0}})
    {'ndcg@10': 1.0, 'recall@100': 1.0, 'mrr@10': 1.0}
    """
    values = per_query(qrels, run, metrics)
    if not any(values[m] for m in metrics):
        raise ValueError("qrels has no query with a relevant document (relevance > 0): nothing to evaluate")
    return {m: sum(v.values()) / len(v) for m, v in values.items()}
