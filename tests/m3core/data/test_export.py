"""Exports: stable hash split, FlagEmbedding JSONL shape, BEIR eval sets from man pages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from m3core.data.examples import Example, read_jsonl, write_jsonl
from m3core.data.export import SPLITS, SplitSpec, export_eval_sets, export_training
from m3core.data.pipeline import MineConfig, mine
from m3core.data.sources.manpages import ManPageSource
from m3core.data.warehouse import Warehouse
from tests.support.data_fixtures import TOPICS, write_man_tree

CFG = MineConfig(workers=1, progress=False)


def test_split_is_stable_across_processes_and_roughly_proportional():
    keys = [f"man:page{i}.1" for i in range(4000)]
    spec = SplitSpec(dev=0.10, test=0.10)
    here = [spec.of(k) for k in keys]
    code = "import sys, json; from m3core.data.export import SplitSpec; print(json.dumps([SplitSpec().of(k) for k in json.load(sys.stdin)]))"
    other = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(keys), capture_output=True, text=True, check=True
        ).stdout
    )
    assert here == other  # another interpreter (another hash seed) agrees
    frac = {s: here.count(s) / len(keys) for s in SPLITS}
    assert frac["test"] == pytest.approx(0.10, abs=0.02) and frac["dev"] == pytest.approx(0.10, abs=0.02)
    with pytest.raises(ValueError, match="split fractions"):
        SplitSpec(dev=0.6, test=0.5)


@pytest.fixture
def man_warehouse(tmp_path):
    # 18 distinct pages per language: each mixes two topics' descriptions and a variant word.
    adverbs = [("quickly", "schnell"), ("carefully", "sorgfältig"), ("remotely", "aus der Ferne")]
    topics = [
        (
            f"{n}{i}",
            f"{en} {adverbs[i][0]}",
            f"{de} {adverbs[i][1]}",
            f"{en_what}, and then {TOPICS[(j + i + 1) % 6][3]}",
            f"{de_what}, und danach {TOPICS[(j + i + 1) % 6][4]}",
        )
        for i in range(3)
        for j, (n, en, de, en_what, de_what) in enumerate(TOPICS)
    ]
    with Warehouse(tmp_path / "w.duckdb") as wh:
        mine([ManPageSource(write_man_tree(tmp_path / "man", topics))], wh, CFG)
        yield wh


def test_training_export_shape_groups_and_stability(tmp_path, man_warehouse):
    spec = SplitSpec(dev=0.2, test=0.3)
    a = export_training(man_warehouse, tmp_path / "a", split=spec, negatives=2)
    export_training(man_warehouse, tmp_path / "b", split=spec, negatives=2)
    for s in SPLITS:
        assert (tmp_path / "a" / f"{s}.jsonl").read_bytes() == (tmp_path / "b" / f"{s}.jsonl").read_bytes()
        # The lines are the one format (`m3core.data.examples`): read back and rewritten, byte for byte.
        examples, skipped = read_jsonl(tmp_path / "a" / f"{s}.jsonl")
        assert not skipped and all(type(e) is Example for e in examples)
        again = write_jsonl(examples, tmp_path / "again" / f"{s}.jsonl")
        assert again.read_bytes() == (tmp_path / "a" / f"{s}.jsonl").read_bytes()
    lines = {s: [json.loads(ln) for ln in (tmp_path / "a" / f"{s}.jsonl").open()] for s in SPLITS}
    assert sum(len(v) for v in lines.values()) == 18 * 3  # de, en, de->en
    assert all(len(v) > 0 for v in lines.values()), {s: len(v) for s, v in lines.items()}
    for row in lines["train"]:
        assert set(row) == {"query", "pos", "neg"} and len(row["pos"]) == 1 and len(row["neg"]) == 2
        assert not set(row["neg"]) & set(row["pos"])
    # A page's pairs in every language land in one split: no test description is ever trained on.
    train_pos = {p for row in lines["train"] for p in row["pos"]}
    assert not train_pos & {p for row in lines["test"] for p in row["pos"]}
    assert sum(a["train"].values()) == len(lines["train"])


def test_training_export_kinds_filter_and_cap(tmp_path, man_warehouse):
    out = export_training(man_warehouse, tmp_path / "t", kinds=["translation"])
    assert all(not c for c in out.values())
    capped = export_training(man_warehouse, tmp_path / "c", max_per_language=4)
    assert sum(sum(c.values()) for c in capped.values()) == 4 * 3


def test_eval_sets_beir_layout(tmp_path, man_warehouse):
    spec = SplitSpec(dev=0.0, test=0.5)
    sets = export_eval_sets(man_warehouse, tmp_path / "eval", split=spec, min_queries=1)
    names = {m["name"]: m for m in sets}
    assert set(names) == {"man-de", "man-en", "man-de-en"}
    assert names["man-de-en"]["kind"] == "cross-lingual" and names["man-de-en"]["corpus_lang"] == "en"
    d = tmp_path / "eval" / "man-de-en"
    corpus = {json.loads(ln)["_id"]: json.loads(ln) for ln in (d / "corpus.jsonl").open()}
    queries = {json.loads(ln)["_id"]: json.loads(ln)["text"] for ln in (d / "queries.jsonl").open()}
    qrels = (d / "qrels" / "test.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore" and len(qrels) - 1 == len(queries)
    assert len(corpus) == 18  # every English page, not only the test ones
    for line in qrels[1:]:
        qid, cid, score = line.split("\t")
        assert qid in queries and cid in corpus and score == "1"
        assert spec.of("man:" + cid) == "test"
        assert corpus[cid]["text"].startswith(f"The {cid.rsplit('.', 1)[0]} program")
    meta = json.loads((d / "meta.json").read_text())
    assert {"name", "lang", "query_lang", "corpus_lang", "kind"} <= set(meta)
