"""Evaluation end to end: BEIR sets on disk -> every mode + BM25 -> JSON, markdown, PNG; and `m3 eval`."""

from __future__ import annotations

import argparse
import json

import pytest

from m3core.commands import eval as eval_cmd
from m3core.evaluation import EvalConfig, EvalSet, evaluate, load_eval_sets, write_eval_set, write_report
from m3core.evaluation.bm25 import BM25Index, tokenize
from tests.support import textgen


def _make_sets(root):
    return textgen.write_toy_eval_sets(root, ("en", "zh"), n_topics=48, seed=2)


def test_bm25_tokenizer_and_baseline():
    assert tokenize("Liste  DIRECTORY contents") == ["liste", "directory", "contents"]
    assert tokenize("列出目录") == ["列出", "出目", "目录"]  # no spaces in Chinese: character bigrams
    index = BM25Index({"a": "打印机 很 好", "b": "河流 和 山脉", "c": "the printer is good"})
    run = index.search({"q1": "打印机", "q2": "printer good", "q3": "nothing matches"}, k=10)
    assert list(run["q1"]) == ["a"] and list(run["q2"]) == ["c"] and run["q3"] == {}


def test_evaluate_every_mode_and_write_report(tiny_embedder, tmp_path):
    sets = load_eval_sets(_make_sets(tmp_path / "sets"))
    assert [s.label for s in sets] == ["en", "zh"]
    config = EvalConfig(cache_dir=tmp_path / "cache", candidates=20)
    report = evaluate(tiny_embedder, sets, config, model_id="tiny")
    modes = ["dense", "sparse", "colbert", "dense+sparse", "all", "bm25"]
    assert report["modes"] == modes
    for entry in report["sets"]:
        assert set(entry["results"]) == set(modes)
        for metrics in entry["results"].values():
            assert set(metrics) == {"ndcg@10", "recall@100", "mrr@10"}
            assert all(0.0 <= v <= 1.0 for v in metrics.values())
        # The corpus is tiny (16 docs): every relevant doc is within the top 100 in every mode that ranks all.
        assert entry["results"]["dense"]["recall@100"] == 1.0
    # Keyword queries on keyword passages: BM25 finds the answers.
    assert report["average"]["bm25"]["mrr@10"] > 0.8
    mean = (
        report["sets"][0]["results"]["dense"]["ndcg@10"] + report["sets"][1]["results"]["dense"]["ndcg@10"]
    ) / 2
    assert report["average"]["dense"]["ndcg@10"] == pytest.approx(mean)
    paths = write_report(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["sets"][0]["label"] == "en"
    md = paths["markdown"].read_text()
    assert "| en |" in md and "| zh |" in md and "bm25" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "cache").glob("passage-*/meta.json"))) == 2  # one per distinct corpus


def _run_cli(argv):
    parser = argparse.ArgumentParser()
    eval_cmd.add_arguments(parser)
    return eval_cmd.run(parser.parse_args(argv))


def test_cli(tiny_model_dir, tmp_path, capsys):
    sets = _make_sets(tmp_path / "sets")
    out = tmp_path / "report"
    argv = ["--model", str(tiny_model_dir), "--eval-set", str(sets / "toy-en"), "--out", str(out)]
    assert _run_cli([*argv, "--modes", "dense,sparse", "--weights", "long"]) == 0
    printed = capsys.readouterr().out
    assert "| en |" in printed and (out / "report.png").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["modes"] == ["dense", "sparse", "bm25"] and report["config"]["weights"] == "long"
    # BM25 only needs no model.
    assert _run_cli(["--eval-set", str(sets), "--modes", "", "--out", str(tmp_path / "b")]) == 0
    with pytest.raises(ValueError, match="--model is required"):
        _run_cli(["--eval-set", str(sets)])


def test_bad_eval_sets_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no corpus\.jsonl"):
        load_eval_sets(tmp_path)
    d = tmp_path / "s"
    write_eval_set(d, EvalSet("s", {"d1": "text"}, {"q1": "query"}, {"q1": {"d1": 1}}))
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td404\t1\n")
    with pytest.raises(ValueError, match=r"document 'd404' is not in corpus\.jsonl"):
        load_eval_sets(d)
    with pytest.raises(ValueError, match="unknown retrieval mode"):
        EvalConfig(modes=("dense", "bm42"))


def _corrupt(set_dir, how):
    """One kind of bad set: a file a user could really hand us."""
    if how == "no-qrels":
        (set_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    elif how == "duplicate-id":
        lines = (set_dir / "corpus.jsonl").read_text().splitlines()
        (set_dir / "corpus.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n")
    elif how == "bad-score":
        rows = (set_dir / "qrels" / "test.tsv").read_text().splitlines()
        qid, did, _ = rows[1].split("\t")
        (set_dir / "qrels" / "test.tsv").write_text(
            "\n".join([rows[0], f"{qid}\t{did}\thigh", *rows[2:]]) + "\n"
        )
    elif how == "empty-query":
        rows = [json.loads(x) for x in (set_dir / "queries.jsonl").read_text().splitlines()]
        rows[0]["text"] = "  "
        (set_dir / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("no-qrels", r"no query has qrels"),
        ("duplicate-id", r"corpus\.jsonl:\d+: _id '[^']+' repeats line 1"),
        ("bad-score", r"qrels/test\.tsv:2: score 'high' of query '[^']+' is not a number"),
        ("empty-query", r"queries\.jsonl:1: query '[^']+' has an empty text"),
    ],
)
def test_a_bad_set_is_reported_and_the_others_are_evaluated(tmp_path, how, reason):
    import re

    root = _make_sets(tmp_path / "sets")
    bad = sorted(p for p in root.iterdir() if p.is_dir())[1]
    _corrupt(bad, how)
    out = tmp_path / "report"
    # BM25 only (no model needed); the report is written, and the command says a set failed.
    assert _run_cli(["--eval-set", str(root), "--modes", "", "--out", str(out)]) == 1
    report = json.loads((out / "report.json").read_text())
    assert [e["label"] for e in report["sets"]] == ["en"]
    [failed] = report["failed_sets"]
    assert failed["name"] == bad.name and re.search(reason, failed["reason"]), failed["reason"]
