"""Our nDCG@10 / Recall@100 / MRR@10 against ranx (an independent implementation) on random runs."""

from __future__ import annotations

import numpy as np
import pytest

from m3core.evaluation.metrics import evaluate_run, per_query


def _random_case(seed: int, n_queries: int = 40, n_docs: int = 300):
    rng = np.random.default_rng(seed)
    qrels, run = {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        rel_docs = rng.choice(n_docs, size=rng.integers(1, 8), replace=False)
        qrels[qid] = {f"d{d}": int(rng.integers(1, 4)) for d in rel_docs}
        if rng.random() < 0.2:  # judged non-relevant entries must not count as relevant
            qrels[qid][f"d{int(rng.integers(n_docs))}"] = 0
        if rng.random() < 0.9:  # some queries have no run at all: they score 0
            ranked = rng.choice(n_docs, size=rng.integers(1, 150), replace=False)
            run[qid] = {f"d{d}": float(s) for d, s in zip(ranked, rng.random(len(ranked)), strict=True)}
    return qrels, run


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_ranx_on_random_runs(seed):
    ranx = pytest.importorskip("ranx")
    qrels, run = _random_case(seed)
    ours = per_query(qrels, run)
    # ranx wants every query present in the run; an empty ranking for the missing ones.
    theirs = ranx.evaluate(
        ranx.Qrels(qrels),
        ranx.Run({q: run.get(q, {}) or {"__none__": 0.0} for q in qrels}),
        ["ndcg@10", "recall@100", "mrr@10"],
        return_mean=False,
    )
    qids = list(ranx.Qrels(qrels).keys())  # ranx reports in its own (sorted) query order
    for metric in ("ndcg@10", "recall@100", "mrr@10"):
        expected = np.asarray(theirs[metric], dtype=float)
        got = np.array([ours[metric][q] for q in qids])
        np.testing.assert_allclose(got, expected, atol=1e-9, err_msg=metric)
    means = evaluate_run(qrels, run)
    assert means["ndcg@10"] == pytest.approx(float(np.mean(theirs["ndcg@10"])))


def test_perfect_and_empty_runs():
    qrels = {"q1": {"a": 1, "b": 2}, "q2": {"c": 1}}
    perfect = {"q1": {"b": 2.0, "a": 1.0}, "q2": {"c": 5.0}}
    assert evaluate_run(qrels, perfect) == {"ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}
    assert evaluate_run(qrels, {}) == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}


def test_cutoffs_are_applied():
    qrels = {"q": {"rel": 1}}
    run = {"q": {**{f"x{i}": 1.0 - i / 1000 for i in range(10)}, "rel": 0.0}}  # relevant at rank 11
    m = evaluate_run(qrels, run)
    assert m["mrr@10"] == 0.0 and m["ndcg@10"] == 0.0 and m["recall@100"] == 1.0


def test_bad_metric_and_empty_qrels_are_clear_errors():
    with pytest.raises(ValueError, match="unknown metric 'map@x'"):
        evaluate_run({"q": {"a": 1}}, {}, ("map@x",))
    with pytest.raises(ValueError, match="no query with a relevant document"):
        evaluate_run({"q": {"a": 0}}, {})
