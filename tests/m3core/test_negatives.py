"""Hard-negative mining: never a positive or the query, rank window honoured, top-up, teacher scores, outputs."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from m3core import scoring
from m3core.commands import negatives as negatives_cmd
from m3core.negatives import Example, NegativesConfig, mine_negatives, normalize, read_examples, write_jsonl
from tests.support import textgen


@pytest.fixture(scope="module")
def data():
    raw = textgen.retrieval_pairs(30, seed=11)
    examples = [Example(query=e["query"], pos=e["pos"], lang=e["lang"]) for e in raw]
    corpus = [e["neg"][0] for e in raw] + [e["pos"][0] for e in raw]
    # Traps: case/whitespace variants of positives and of queries sit in the corpus.
    corpus += ["  " + e["pos"][0].upper().replace(" ", "   ") for e in raw[:10]]
    corpus += [e["query"].title() for e in raw[:10]]
    return examples, corpus


def _hybrid_full(embedder, queries, pool, weights):
    """Every query × pool hybrid score, straight from `m3core.scoring` (no index, no mining code)."""
    q = embedder.encode_queries(queries, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    p = embedder.encode_corpus(pool, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    w_d, w_s, w_c = weights
    return (
        w_d * scoring.dense_scores(q["dense_vecs"], p["dense_vecs"])
        + w_s * scoring.lexical_scores(q["lexical_weights"], p["lexical_weights"])
        + w_c * scoring.colbert_scores(q["colbert_vecs"], p["colbert_vecs"])
    )


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_mining_never_emits_a_positive_or_the_query(tiny_embedder, data, mode):
    examples, corpus = data
    # Rank 1 allowed and more negatives than the window holds: positives are at the top and top-up runs too.
    cfg = NegativesConfig(mode=mode, rank_range=(1, 8), num_negatives=12, seed=0)
    result = mine_negatives(tiny_embedder, examples, corpus, cfg)
    assert result.n_topped_up > 0
    for ex in result.examples:
        banned = {normalize(p) for p in ex.pos} | {normalize(ex.query)}
        assert len(ex.neg) == 12
        assert not banned & {normalize(n) for n in ex.neg}
        assert len({normalize(n) for n in ex.neg}) == len(ex.neg), "a negative is repeated"


def test_rank_range_is_honoured(tiny_embedder, data):
    examples, corpus = data
    lo, hi = 3, 12
    cfg = NegativesConfig(mode="hybrid", rank_range=(lo, hi), num_negatives=4, seed=1)
    result = mine_negatives(tiny_embedder, examples, corpus, cfg)
    full = _hybrid_full(tiny_embedder, [e.query for e in examples], result.pool, (1.0, 0.3, 1.0))
    index = {t: i for i, t in enumerate(result.pool)}
    eps = 1e-5
    for qi, ex in enumerate(result.examples):
        assert len(ex.neg) == 4 and all(r is not None and lo <= r <= hi for r in ex.neg_ranks)
        row = full[qi]
        for text, rank in zip(ex.neg, ex.neg_ranks, strict=True):
            s = row[index[text]]
            # The brute-force rank of this passage (a range, in case of near-ties) contains the reported rank.
            assert (row > s + eps).sum() < rank <= (row >= s - eps).sum()


def test_top_up_avoids_skipped_top_ranks_and_is_seeded(tiny_embedder, data):
    examples, corpus = data
    cfg = NegativesConfig(mode="hybrid", rank_range=(3, 4), num_negatives=6, seed=7)
    a = mine_negatives(tiny_embedder, examples, corpus, cfg)
    full = _hybrid_full(tiny_embedder, [e.query for e in examples], a.pool, (1.0, 0.3, 1.0))
    for qi, ex in enumerate(a.examples):
        ranks = ex.neg_ranks
        assert ranks.count(None) >= 6 - 2 and len(ex.neg) == 6
        top2 = {normalize(a.pool[d]) for d in np.argsort(-full[qi])[:2]}
        assert not top2 & {normalize(n) for n, r in zip(ex.neg, ranks, strict=True) if r is None}
    b = mine_negatives(tiny_embedder, examples, corpus, cfg)
    assert [e.neg for e in a.examples] == [e.neg for e in b.examples]
    c = mine_negatives(
        tiny_embedder,
        examples,
        corpus,
        NegativesConfig(mode="hybrid", rank_range=(3, 4), num_negatives=6, seed=8),
    )
    assert [e.neg for e in a.examples] != [e.neg for e in c.examples]


def test_teacher_scores_are_the_models_hybrid_scores(tiny_embedder, data):
    examples, corpus = data
    cfg = NegativesConfig(rank_range=(2, 20), num_negatives=3, teacher_scores=True, weights="long")
    result = mine_negatives(tiny_embedder, examples[:6], corpus, cfg)
    for ex in result.examples:
        full = _hybrid_full(tiny_embedder, [ex.query], ex.pos + ex.neg, (0.15, 0.5, 0.35))[0]
        np.testing.assert_allclose(ex.pos_scores + ex.neg_scores, full, rtol=1e-4, atol=1e-5)
        line = ex.to_flag_json()
        assert len(line["pos_scores"]) == len(line["pos"]) and len(line["neg_scores"]) == len(line["neg"])


def test_bad_inputs_are_clear_errors(tiny_embedder, tmp_path):
    with pytest.raises(ValueError, match="rank_range"):
        NegativesConfig(rank_range=(5, 2))
    with pytest.raises(ValueError, match="example 0: needs a non-empty query"):
        mine_negatives(tiny_embedder, [Example(query="q", pos=[])], ["p"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": ["p"]}\n{"query": "q2"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: 'pos' must be a list of strings"):
        read_examples(bad)


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    negatives_cmd.add_arguments(parser)
    return negatives_cmd.run(parser.parse_args(argv))


def test_cli_from_warehouse_to_jsonl_and_warehouse(tiny_model_dir, tmp_path, capsys):
    from m3core.data.warehouse import Warehouse

    raw = textgen.retrieval_pairs(12, seed=4)
    db = tmp_path / "w.duckdb"
    with Warehouse(db) as wh:
        for i, e in enumerate(raw):
            wh.con.execute(
                "INSERT INTO pairs (pair_id, kind, query, positive, lang) VALUES (?, 'title-body', ?, ?, ?)",
                [f"p{i}", e["query"], e["pos"][0], e["lang"]],
            )
    out = tmp_path / "train.jsonl"
    argv = ["--model", str(tiny_model_dir), "--from-warehouse", "--warehouse", str(db), "--output", str(out)]
    assert (
        _run_cli([*argv, "--to-warehouse", "--num-negatives", "3", "--range", "2-10", "--teacher-scores"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["examples"] == len(lines) == len({e["query"] for e in raw})
    assert all(len(x["neg"]) == 3 and x["pos"] and len(x["neg_scores"]) == 3 for x in lines)
    with Warehouse(db) as wh:
        rows = wh.con.execute(
            "SELECT query, neg, neg_ranks, pair_ids, run_id FROM hard_negatives ORDER BY query"
        ).fetchall()
        assert wh.schema_version("negatives") == 1
        assert wh.con.execute("SELECT n_examples FROM mining_runs").fetchone()[0] == len(rows)
    by_query = {x["query"]: x["neg"] for x in lines}
    assert len(rows) == len(lines)
    for query, neg, ranks, pair_ids, run_id in rows:
        assert (
            neg == by_query[query]
            and all(2 <= r <= 10 for r in ranks)
            and pair_ids
            and run_id == summary["run_id"]
        )


def test_cli_from_files_roundtrip(tiny_model_dir, tmp_path, data, capsys):
    examples, corpus = data
    inp = write_jsonl(examples[:5], tmp_path / "in.jsonl")
    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
    out = tmp_path / "out.jsonl"
    argv = [
        "--model",
        str(tiny_model_dir),
        "--input",
        str(inp),
        "--corpus",
        str(corpus_file),
        "--output",
        str(out),
    ]
    assert _run_cli([*argv, "--num-negatives", "2"]) == 0
    mined = read_examples(out)
    assert [m.query for m in mined] == [e.query for e in examples[:5]] and all(len(m.neg) == 2 for m in mined)
    with pytest.raises(ValueError, match="exactly one of --input"):
        _run_cli(["--model", str(tiny_model_dir), "--output", str(out)])
