"""Hard-negative mining: never a positive or the query, rank window honoured, top-up, teacher scores, the
positive-aware margins and hybrid re-scoring, outputs (JSONL, warehouse, CLI)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest

from m3core import scoring
from m3core.commands import negatives as negatives_cmd
from m3core.negatives import (
    Example,
    NegativesConfig,
    margin_threshold,
    mine_negatives,
    normalize,
    read_examples,
    write_jsonl,
)
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
        assert wh.schema_version("negatives") == 2
        n_examples, n_dropped = wh.con.execute(
            "SELECT n_examples, n_margin_dropped FROM mining_runs"
        ).fetchone()
        assert n_examples == len(rows) and n_dropped == 0 == summary["margin_dropped"]
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


# ------------------------------------------------------------------------------ positive-aware margins, rescoring
SHORT = (1.0, 0.3, 1.0)  # the tiny model has no saved profile: mining uses the `short` preset


def _dense_full(embedder, queries, pool):
    """Every query × pool dense score as a plain dot product of the embedder's vectors (no mining code)."""
    q = np.asarray(embedder.encode_queries(queries)["dense_vecs"], dtype=np.float64)
    p = np.asarray(embedder.encode_corpus(pool)["dense_vecs"], dtype=np.float64)
    return q @ p.T


def _window(row, pool, ex, lo, hi):
    """Pool ids of ranks lo..hi of the brute-force ranking `row`, in rank order, without the query's positives,
    the query and repeats (compared normalized), as the module docstring defines the window."""
    seen, out = {normalize(p) for p in ex.pos} | {normalize(ex.query)}, []
    for rank, doc in enumerate(np.argsort(-row, kind="stable")[:hi].tolist(), start=1):
        key = normalize(pool[doc])
        if rank >= lo and key not in seen:
            seen.add(key)
            out.append(doc)
    return out


def _threshold(pos, absolute=None, relative=None):
    """The spec, written out: below the lowest positive score by each margin (relative: a fraction of |pos|)."""
    bounds = [np.inf]
    if absolute is not None:
        bounds.append(pos - absolute)
    if relative is not None:
        bounds.append(pos - relative * abs(pos))
    return min(bounds)


def _expected(full, pool, examples, cfg, eps):
    """Per example, independently: (window, threshold, dropped if no score is within eps of it: low, high)."""
    index = {t: i for i, t in enumerate(pool)}
    out = []
    for qi, ex in enumerate(examples):
        row = full[qi]
        window = _window(row, pool, ex, *cfg.rank_range)
        thr = _threshold(min(row[index[p]] for p in ex.pos), cfg.absolute_margin, cfg.relative_margin)
        out.append(
            (window, thr, sum(row[d] > thr + eps for d in window), sum(row[d] > thr - eps for d in window))
        )
    return out


def _full(embedder, examples, pool, by):
    queries = [e.query for e in examples]
    return (
        _hybrid_full(embedder, queries, pool, SHORT)
        if by == "hybrid"
        else _dense_full(embedder, queries, pool)
    )


@pytest.mark.parametrize(
    ("mode", "margins", "two_positives"),
    [
        ("dense", {"absolute_margin": 0.002}, False),
        ("hybrid", {"absolute_margin": 0.1}, False),
        ("dense", {"relative_margin": 0.002}, False),
        ("hybrid", {"relative_margin": 0.04}, False),
        (
            "dense",
            {"absolute_margin": 0.001, "relative_margin": 0.003},
            False,
        ),  # the relative one is stricter
        ("hybrid", {"absolute_margin": 0.1}, True),  # the threshold follows the lower-scoring positive
    ],
    ids=["dense-abs", "hybrid-abs", "dense-rel", "hybrid-rel", "dense-both", "hybrid-two-positives"],
)
def test_margins_drop_exactly_the_window_candidates_above_the_threshold(
    tiny_embedder, data, mode, margins, two_positives
):
    examples, corpus = data
    if two_positives:  # a second positive each: another query's, which this query's model scores lower
        examples = [replace(e, pos=[*e.pos, examples[i - 1].pos[0]]) for i, e in enumerate(examples)]
    cfg = NegativesConfig(mode=mode, rank_range=(2, 40), num_negatives=2, seed=3, **margins)
    eps = 1e-5 if mode == "dense" else 1e-4
    pool = mine_negatives(
        tiny_embedder, examples[:1], corpus, NegativesConfig()
    ).pool  # the same pool for all
    full = _full(tiny_embedder, examples, pool, mode)
    # Only examples whose window keeps enough candidates: then no random top-up runs and every drop is a window's.
    keep = [
        i for i, (w, _, _, hi) in enumerate(_expected(full, pool, examples, cfg, eps)) if len(w) - hi >= 2
    ]
    chosen = [examples[i] for i in keep]
    assert len(chosen) >= 5
    result = mine_negatives(tiny_embedder, chosen, corpus, cfg)
    assert result.pool == pool and result.n_topped_up == 0
    expected = _expected(full[keep], pool, chosen, cfg, eps)
    low, high = sum(e[2] for e in expected), sum(e[3] for e in expected)
    assert 0 < low <= result.n_margin_dropped <= high
    index = {t: i for i, t in enumerate(pool)}
    for ex, row, (window, thr, _, _) in zip(result.examples, full[keep], expected, strict=True):
        assert len(ex.neg) == 2 and all(r is not None for r in ex.neg_ranks)
        assert all(row[index[n]] <= thr + eps for n in ex.neg), "a negative scores above the threshold"
        assert {index[n] for n in ex.neg} <= set(window)
    if "absolute_margin" in margins and "relative_margin" in margins:
        # With both, the lower threshold applies: the absolute one alone would drop fewer.
        absolute_only = cfg.model_copy(update={"relative_margin": None})
        weaker = _expected(full[keep], pool, chosen, absolute_only, eps)
        assert sum(e[3] for e in weaker) < low


def test_top_up_passages_pass_the_margin_too(tiny_embedder, data):
    examples, corpus = data
    cfg = NegativesConfig(rank_range=(2, 40), num_negatives=3, seed=5, absolute_margin=0.002)
    pool = mine_negatives(tiny_embedder, examples[:1], corpus, NegativesConfig()).pool
    full = _dense_full(tiny_embedder, [e.query for e in examples], pool)
    expected = _expected(full, pool, examples, cfg, 1e-5)
    result = mine_negatives(tiny_embedder, examples, corpus, cfg)
    assert result.n_topped_up > 0  # some windows lose (nearly) every candidate to the margin
    index = {t: i for i, t in enumerate(result.pool)}
    for ex, row, (_, thr, _, _) in zip(result.examples, full, expected, strict=True):
        assert len(ex.neg) == 3
        assert all(row[index[n]] <= thr + 1e-5 for n in ex.neg)
    # Top-up rejects count as drops too, on top of the window's.
    assert result.n_margin_dropped >= sum(e[2] for e in expected)


def test_margins_off_change_nothing_and_leave_unaffected_queries_alone(tiny_embedder, data):
    examples, corpus = data
    base_cfg = NegativesConfig(rank_range=(10, 40), num_negatives=3, seed=9)
    base = mine_negatives(tiny_embedder, examples, corpus, base_cfg)
    explicit = NegativesConfig(
        rank_range=(10, 40), num_negatives=3, seed=9, absolute_margin=None, relative_margin=None, rescore=None
    )
    off = mine_negatives(tiny_embedder, examples, corpus, explicit)
    assert base.n_margin_dropped == off.n_margin_dropped == 0 and base.n_topped_up == 0
    assert [(e.neg, e.neg_ranks) for e in off.examples] == [(e.neg, e.neg_ranks) for e in base.examples]
    # A margin that drops nothing of a query's window leaves that query's negatives exactly as without it.
    margin_cfg = base_cfg.model_copy(update={"absolute_margin": 0.0})
    margin = mine_negatives(tiny_embedder, examples, corpus, margin_cfg)
    full = _dense_full(tiny_embedder, [e.query for e in examples], base.pool)
    expected = _expected(full, base.pool, examples, margin_cfg, 1e-5)
    untouched = [i for i, e in enumerate(expected) if e[3] == 0]
    touched = [i for i, e in enumerate(expected) if e[2] > 0]
    assert untouched and touched
    for i in untouched:
        assert (margin.examples[i].neg, margin.examples[i].neg_ranks) == (
            base.examples[i].neg,
            base.examples[i].neg_ranks,
        )
    assert any(margin.examples[i].neg != base.examples[i].neg for i in touched)


def test_rescore_hybrid_judges_and_orders_by_the_hybrid_score(tiny_embedder, data):
    examples, corpus = data
    base_cfg = NegativesConfig(mode="dense", rank_range=(2, 40), num_negatives=4, seed=2)
    base = mine_negatives(tiny_embedder, examples, corpus, base_cfg)
    queries = [e.query for e in examples]
    hybrid = _hybrid_full(tiny_embedder, queries, base.pool, SHORT)
    index = {t: i for i, t in enumerate(base.pool)}
    eps = 1e-4

    # Alone: the same sample as without rescoring (same ranks), ordered hardest first by the hybrid score.
    ordered = mine_negatives(
        tiny_embedder, examples, corpus, base_cfg.model_copy(update={"rescore": "hybrid"})
    )
    assert ordered.n_margin_dropped == 0
    reordered = 0
    for ex, b, row in zip(ordered.examples, base.examples, hybrid, strict=True):
        assert sorted(zip(ex.neg, ex.neg_ranks, strict=True)) == sorted(zip(b.neg, b.neg_ranks, strict=True))
        h = [row[index[n]] for n in ex.neg]
        assert np.all(np.diff(h) <= eps), "not in descending hybrid order"
        reordered += ex.neg != b.neg
    assert reordered > 0  # the dense rank order is not the hybrid order

    # With a margin: the hybrid score decides what is dropped, while the window is still the dense ranking's.
    cfg = base_cfg.model_copy(update={"rescore": "hybrid", "absolute_margin": 0.1})
    dense = _dense_full(tiny_embedder, queries, base.pool)
    keep = []
    for qi, ex in enumerate(examples):
        window = _window(dense[qi], base.pool, ex, 2, 40)
        thr = min(hybrid[qi][index[p]] for p in ex.pos) - 0.1
        if sum(hybrid[qi][d] <= thr - eps for d in window) >= 4:
            keep.append((qi, window, thr))
    chosen = [examples[qi] for qi, _, _ in keep]
    result = mine_negatives(tiny_embedder, chosen, corpus, cfg)
    assert result.n_topped_up == 0
    low = sum(sum(hybrid[qi][d] > thr + eps for d in w) for qi, w, thr in keep)
    high = sum(sum(hybrid[qi][d] > thr - eps for d in w) for qi, w, thr in keep)
    assert 0 < low <= result.n_margin_dropped <= high
    for ex, (qi, window, thr) in zip(result.examples, keep, strict=True):
        h = [hybrid[qi][index[n]] for n in ex.neg]
        assert all(x <= thr + eps for x in h) and np.all(np.diff(h) <= eps)
        assert {index[n] for n in ex.neg} <= set(window)


def test_rescore_hybrid_needs_trained_heads(tiny_model_dir, tmp_path, data):
    import shutil

    from m3core import M3Embedder
    from m3core.model import COLBERT_FILE, SPARSE_FILE

    examples, corpus = data
    plain = shutil.copytree(tiny_model_dir, tmp_path / "plain")
    (plain / COLBERT_FILE).unlink()
    (plain / SPARSE_FILE).unlink()
    embedder = M3Embedder(str(plain), batch_size=8, show_progress=False)  # random sparse/ColBERT heads
    with pytest.raises(ValueError, match=r"rescore='hybrid': .*plain has no trained sparse/ColBERT heads"):
        mine_negatives(embedder, examples[:3], corpus, NegativesConfig(rescore="hybrid", absolute_margin=0.0))
    # With dense-only weights the hybrid is the dense score: no heads needed.
    ok = mine_negatives(
        embedder, examples[:3], corpus, NegativesConfig(rescore="hybrid", weights="1,0,0", num_negatives=2)
    )
    assert [len(e.neg) for e in ok.examples] == [2, 2, 2]


def test_margin_config_is_validated_naming_the_field():
    from pydantic import ValidationError

    for field, value in [
        ("relative_margin", 1.0),
        ("relative_margin", -0.1),
        ("relative_margin", float("nan")),
        ("absolute_margin", -0.5),
        ("absolute_margin", float("inf")),
        ("rescore", "dense"),
    ]:
        with pytest.raises(ValidationError, match=field):
            NegativesConfig(**{field: value})
    assert NegativesConfig(relative_margin=0.0, absolute_margin=0.0).relative_margin == 0.0


def test_relative_margin_stays_below_a_negative_positive_score():
    for pos in (-2.0, -0.3, 0.0, 0.4, 1.5):
        for r in (0.0, 0.1, 0.5, 0.99):
            thr = margin_threshold([pos, pos + 1.0], absolute=None, relative=r)
            assert thr <= pos and thr == pytest.approx(pos - r * abs(pos))
    assert margin_threshold([-0.5], absolute=0.1, relative=0.5) == pytest.approx(-0.75)  # the stricter
    assert margin_threshold([0.8], absolute=0.1, relative=None) == pytest.approx(0.7)
    assert margin_threshold([0.8], absolute=None, relative=None) == float("inf")


def test_warehouse_records_drops_and_migrates_a_version_1_warehouse(tiny_embedder, data, tmp_path):
    from m3core.data.warehouse import Warehouse
    from m3core.negatives import MIGRATIONS, write_warehouse

    examples, corpus = data
    db = tmp_path / "w.duckdb"
    with Warehouse(db) as wh:  # a warehouse written before the margins existed
        assert wh.migrate("negatives", MIGRATIONS[:1]) == ["0001_hard_negatives"]
        wh.con.execute("INSERT INTO mining_runs VALUES ('old', 'm', '{}', 1, 0, now())")
        assert wh.schema_version("negatives") == 1
    cfg = NegativesConfig(rank_range=(2, 40), num_negatives=2, absolute_margin=0.002)
    result = mine_negatives(tiny_embedder, examples[:6], corpus, cfg)
    assert result.n_margin_dropped > 0
    with Warehouse(db) as wh:
        run_id = write_warehouse(wh, result, cfg, model_id="tiny")
        assert wh.schema_version("negatives") == 2
        rows = dict(wh.con.execute("SELECT run_id, n_margin_dropped FROM mining_runs").fetchall())
        saved = wh.con.execute("SELECT config FROM mining_runs WHERE run_id = ?", [run_id]).fetchone()[0]
        n_mined = wh.con.execute("SELECT count(*) FROM hard_negatives WHERE run_id = ?", [run_id]).fetchone()[
            0
        ]
    assert rows == {"old": None, run_id: result.n_margin_dropped}
    assert NegativesConfig.model_validate_json(saved) == cfg and n_mined == 6


def test_cli_margin_flags_end_to_end(tiny_model_dir, tiny_embedder, tmp_path, data, capsys):
    from m3core import cli
    from m3core.data.warehouse import Warehouse
    from m3core.negatives import read_corpus

    examples, corpus = data
    inp = write_jsonl(examples[:8], tmp_path / "in.jsonl")
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("".join(t.strip() + "\n" for t in corpus))
    out, db = tmp_path / "out.jsonl", tmp_path / "w.duckdb"
    argv = ["negatives", "--model", str(tiny_model_dir), "--input", str(inp), "--corpus", str(corpus_file),
            "--range", "2-40", "--num-negatives", "2"]  # fmt: skip
    flags = ["--absolute-margin", "0.1", "--relative-margin", "0.01", "--rescore", "hybrid"]
    assert cli.main([*argv, *flags, "--output", str(out), "--to-warehouse", "--warehouse", str(db)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg = NegativesConfig(
        rank_range=(2, 40), num_negatives=2, absolute_margin=0.1, relative_margin=0.01, rescore="hybrid"
    )
    want = mine_negatives(tiny_embedder, read_examples(inp), read_corpus(str(corpus_file)), cfg)
    assert summary["margin_dropped"] == want.n_margin_dropped > 0
    assert [m.neg for m in read_examples(out)] == [e.neg for e in want.examples]
    with Warehouse(db) as wh:
        saved, n_dropped = wh.con.execute("SELECT config, n_margin_dropped FROM mining_runs").fetchone()
    assert NegativesConfig.model_validate_json(saved) == cfg and n_dropped == want.n_margin_dropped

    # Bad values: the front door's one-line error naming the flag, exit 2, before any model is loaded.
    for flag, value, message in [
        ("--relative-margin", "1.5", "--relative-margin 1.5: Input should be less than 1"),
        ("--relative-margin", "nan", "--relative-margin nan: Input should be a finite number"),
        ("--absolute-margin", "-0.1", "--absolute-margin -0.1: Input should be greater than or equal to 0"),
    ]:
        assert cli.main([*argv, flag, value, "--output", str(out)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"m3 negatives: error: {message}"]
    with pytest.raises(SystemExit) as exit_info:  # argparse's own check of the choices
        cli.main([*argv, "--rescore", "dense", "--output", str(out)])
    assert exit_info.value.code == 2 and "invalid choice: 'dense'" in capsys.readouterr().err


# ------------------------------------------------------------------------- a pre-encoded pool (at scale)
def _encode_in_halves(embedder, texts, outputs, meta):
    """The pool encoded elsewhere, in two shards merged in order (as the encode_corpus flow does)."""
    from m3core.retrieval.corpus import Embeddings, encode_texts

    half = len(texts) // 2
    parts = [
        encode_texts(embedder, part, outputs=outputs, side="passage", batch_size=8)
        for part in (texts[:half], texts[half:])
    ]
    return Embeddings.concat(parts, meta)


def test_a_pre_encoded_pool_gives_the_same_negatives(tiny_embedder, data, tmp_path):
    from m3core.negatives import mine_file, needed_outputs, read_corpus, write_pool

    examples, corpus = data
    train = write_jsonl(examples, tmp_path / "train.jsonl")
    pool_file = tmp_path / "pool.jsonl"
    assert write_pool(train, pool_file, corpus) == len(read_corpus(pool_file))
    cfg = NegativesConfig(
        mode="hybrid", rank_range=(2, 20), num_negatives=4, teacher_scores=True, weights="long"
    )
    emb = _encode_in_halves(
        tiny_embedder, read_corpus(pool_file), needed_outputs(cfg), {"corpus": str(pool_file)}
    )
    emb.save(tmp_path / "merged")

    want = mine_negatives(tiny_embedder, examples, corpus, cfg)
    got = mine_negatives(tiny_embedder, examples, corpus, cfg, pool_embeddings=tmp_path / "merged")
    assert got.pool == want.pool
    assert [e.neg for e in got.examples] == [e.neg for e in want.examples]
    assert [e.neg_ranks for e in got.examples] == [e.neg_ranks for e in want.examples]
    for a, b in zip(got.examples, want.examples, strict=True):
        np.testing.assert_allclose(a.pos_scores + a.neg_scores, b.pos_scores + b.neg_scores, atol=1e-5)
    # The file front door too, with the pool's own passages (no corpus).
    write_pool(train, tmp_path / "own.jsonl")
    own = _encode_in_halves(tiny_embedder, read_corpus(tmp_path / "own.jsonl"), ("dense",), {})
    dense = NegativesConfig(num_negatives=3)
    a = mine_file(tiny_embedder, train, tmp_path / "a.jsonl", dense, pool_embeddings=own)
    b = mine_file(tiny_embedder, train, tmp_path / "b.jsonl", dense)
    assert a == {**b, "file": str(tmp_path / "a.jsonl")}
    assert [e.neg for e in read_examples(tmp_path / "a.jsonl")] == [
        e.neg for e in read_examples(tmp_path / "b.jsonl")
    ]


def test_pool_embeddings_that_are_not_the_pool_are_clear_errors(tiny_embedder, data, tmp_path):
    from m3core.negatives import build_pool

    examples, corpus = data
    pool = build_pool(examples, corpus)
    cfg = NegativesConfig(num_negatives=2)
    emb = _encode_in_halves(tiny_embedder, pool, ("dense",), {})

    def mine_with(embeddings, config=cfg):
        return mine_negatives(tiny_embedder, examples, corpus, config, pool_embeddings=embeddings)

    with pytest.raises(
        ValueError, match=rf"pool embeddings: {len(pool) - 1} passages, but the pool has {len(pool)}"
    ):
        mine_with(emb.take(range(len(pool) - 1)))
    last = len(pool) - 1
    reordered = emb.take([last, *range(1, last), 0])  # first and last swapped: only their vectors tell
    with pytest.raises(
        ValueError, match=rf"passages \[0, {last}\] are not the pool's passages as this model"
    ):
        mine_with(reordered)
    # With the corpus file it was encoded from (the encode_corpus flow records it), the texts are compared.
    swapped = tmp_path / "swapped.txt"
    swapped.write_text("\n".join([pool[1], pool[0], *pool[2:]]) + "\n")  # the texts differ at 0 already
    reordered.meta = {"corpus": str(swapped)}
    reordered.save(tmp_path / "swapped")
    with pytest.raises(ValueError, match=rf"pool embeddings {tmp_path}/swapped: encoded from .*swapped.txt, which "
                                         r"is not the pool \(passage 0 differs\)"):  # fmt: skip
        mine_with(tmp_path / "swapped")
    with pytest.raises(ValueError, match=r"lacks output\(s\) \['sparse'\] \(has \['dense'\]\)"):
        mine_with(emb, NegativesConfig(mode="hybrid", weights="1,0.3,0"))
    assert [e.neg for e in mine_with(emb).examples]  # the right embeddings pass the same checks


def test_cli_pool_embeddings_and_index_flags(tiny_model_dir, tiny_embedder, tmp_path, data, capsys):
    from m3core import cli
    from m3core.negatives import read_corpus

    examples, _ = data
    inp = write_jsonl(examples[:8], tmp_path / "in.jsonl")
    base = ["negatives", "--model", str(tiny_model_dir), "--input", str(inp)]
    assert cli.main([*base, "--write-pool", str(tmp_path / "pool.jsonl")]) == 0  # the pool: its 8 positives
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pool"] == 8
    encoded = _encode_in_halves(tiny_embedder, read_corpus(tmp_path / "pool.jsonl"), ("dense",), {})
    encoded.save(tmp_path / "pool-emb")
    out = tmp_path / "out.jsonl"
    argv = [*base, "--range", "2-20", "--num-negatives", "2", "--output", str(out)]
    flags = ["--pool-embeddings", str(tmp_path / "pool-emb"), "--index", "flat", "--query-shard-size", "3"]
    assert cli.main([*argv, *flags]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = mine_negatives(
        tiny_embedder, examples[:8], None, NegativesConfig(rank_range=(2, 20), num_negatives=2)
    )
    assert summary["index"] == "flat" and summary["index_recall"] is None
    assert [m.neg for m in read_examples(out)] == [e.neg for e in want.examples]

    for flag, value, message in [
        ("--nprobe", "0", "--nprobe 0: Input should be greater than or equal to 1"),
        ("--query-shard-size", "0", "--query-shard-size 0: Input should be greater than or equal to 1"),
        # IVF-PQ on a pool too small to train its codebooks: said before any search.
        ("--index", "ivfpq", "ivfpq: 8 training vectors are fewer than the 256 centroids of pq_nbits 8"),
        ("--pool-embeddings", str(tmp_path / "nowhere"), "not an embeddings directory (no meta.json)"),
    ]:
        assert cli.main([*argv, flag, value]) == 2
        assert message in capsys.readouterr().err
