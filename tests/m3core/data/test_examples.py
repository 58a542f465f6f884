"""One `Example` and one FlagEmbedding JSONL reader/writer (`m3core.data.examples`), shared by the warehouse export,
`m3 synth export`, hard-negative mining and training."""

from __future__ import annotations

import json

import pytest

from m3core.data import examples as ex_mod
from m3core.data.examples import Example, parse_example, read_jsonl, write_jsonl

FULL = Example(
    query='größe "ü"',
    pos=["p1 ✓", "p2"],
    neg=["n\n1"],
    pos_scores=[1.0, 0.5],
    neg_scores=[0.25],
    prompt="query: ",
    type="symmetric_class",
)
# The exact bytes of FULL's line: FlagEmbedding's key order, non-ASCII as is, one line.
FULL_LINE = (
    '{"query": "größe \\"ü\\"", "pos": ["p1 ✓", "p2"], "neg": ["n\\n1"], "pos_scores": [1.0, 0.5], '
    '"neg_scores": [0.25], "prompt": "query: ", "type": "symmetric_class"}\n'
)


def test_written_line_is_exact_and_reads_back_equal(tmp_path):
    plain = Example(query="q", pos=["p"])
    path = write_jsonl([FULL, plain], tmp_path / "sub" / "t.jsonl")  # parents are created
    assert path.read_text(encoding="utf-8") == FULL_LINE + '{"query": "q", "pos": ["p"], "neg": []}\n'
    back, skipped = read_jsonl(path)
    assert back == [FULL, plain] and not skipped
    assert back[0].source == f"{path}:1"  # where it came from; not part of equality
    write_jsonl(back, tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()


def test_mining_fields_and_lang_are_not_written():
    mined = Example(query="q", pos=["p"], neg=["n"], lang="de", neg_ranks=[3], pair_ids=["x"])
    assert mined.to_flag_json() == {"query": "q", "pos": ["p"], "neg": ["n"]}
    # lang is accepted on read (warehouse-made lines may carry it) and kept.
    assert parse_example({"query": "q", "pos": ["p"], "lang": "de"}).lang == "de"


def test_negatives_and_training_share_the_one_class_and_io(tmp_path):
    from m3core import negatives
    from m3core.train import data as train_data

    assert negatives.Example is train_data.Example is Example
    assert train_data.parse_example is parse_example and negatives.write_jsonl is write_jsonl
    assert train_data.NO_IN_BATCH_TYPES is ex_mod.NO_IN_BATCH_TYPES
    path = write_jsonl([FULL], tmp_path / "t.jsonl")
    trained = train_data.TrainDataset.from_jsonl(path).examples
    mined = negatives.read_examples(path)
    assert type(trained[0]) is type(mined[0]) is Example
    assert trained == [FULL]
    # Mining's reader drops the input's teacher scores (they score negatives it replaces), keeps the rest.
    assert mined == [
        Example(query=FULL.query, pos=FULL.pos, neg=FULL.neg, prompt=FULL.prompt, type=FULL.type)
    ]
    assert not mined[0].in_batch_negatives and Example("q", ["p"]).in_batch_negatives


def test_one_validation_for_both_readers(tmp_path):
    from m3core.negatives import read_examples
    from m3core.train.data import TrainDataset

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": ["p"]}\n\n{"query": "q2", "pos": "p"}\n', encoding="utf-8")
    for read in (read_examples, TrainDataset.from_jsonl, read_jsonl):
        with pytest.raises(ValueError, match=r"bad\.jsonl:3: 'pos' must be a list of strings, got str"):
            read(bad)
    examples, skipped = read_jsonl(bad, skip_bad_lines=True)
    assert len(examples) == 1 and skipped == {"'pos' must be a list of strings, got str": 1}
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no examples"):
        read_examples(empty)


def test_synth_export_writes_through_the_one_writer(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    from synth import store

    con = duckdb.connect()
    from m3core.data.export import SplitSpec

    def key_in(split: str) -> str:
        return next(k for k in (f"man:page{i}.1" for i in range(1000)) if SplitSpec().of(k) == split)

    con.execute("CREATE TABLE documents (doc_id VARCHAR, text VARCHAR, group_key VARCHAR)")
    con.execute("CREATE TABLE synth_queries (query_id VARCHAR, query VARCHAR, paragraph VARCHAR, doc_id VARCHAR, lang VARCHAR)")  # fmt: skip
    con.execute(
        "INSERT INTO documents VALUES ('d1', 'Dokument ä', ?), ('d2', 'doc two', ?)",
        [key_in("train"), key_in("test")],
    )
    con.execute("INSERT INTO synth_queries VALUES ('k2', 'wie ß?', 'Absatz ä', 'd1', 'de'), ('k1', 'q \"x\"', 'p2', 'd2', 'en')")  # fmt: skip
    out = tmp_path / "synth.jsonl"
    assert store.export_training_jsonl(con, out) == 2
    assert out.read_text(encoding="utf-8") == (
        '{"query": "q \\"x\\"", "pos": ["p2"], "neg": []}\n{"query": "wie ß?", "pos": ["Absatz ä"], "neg": []}\n'
    )
    back, _ = read_jsonl(out)
    assert back == [Example(query='q "x"', pos=["p2"]), Example(query="wie ß?", pos=["Absatz ä"])]
    assert store.export_training_jsonl(con, out, positive="document", languages=["de"]) == 1
    assert json.loads(out.read_text(encoding="utf-8")) == {
        "query": "wie ß?",
        "pos": ["Dokument ä"],
        "neg": [],
    }
    # the train split only: the query on the test-split document (d2) stays out
    assert store.export_training_jsonl(con, out, positive="document", splits=["train"]) == 1
    assert json.loads(out.read_text(encoding="utf-8"))["query"] == "wie ß?"
    with pytest.raises(ValueError, match=r"unknown splits \['held-out'\]"):
        store.export_training_jsonl(con, out, splits=["held-out"])
