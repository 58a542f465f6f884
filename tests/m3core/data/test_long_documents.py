"""Long-document sets and training lines from a real DuckDB warehouse, lengths counted by a real tokenizer."""

from __future__ import annotations

import json
import random

import pytest
from transformers import AutoTokenizer

from m3core.data.examples import read_jsonl
from m3core.data.export import SplitSpec
from m3core.data.long_documents import (
    LongDocSpec,
    export_long_eval_sets,
    export_long_training,
    sentence_spans,
)
from m3core.data.warehouse import Warehouse
from tests.support import textgen

LANGS = ("en", "de")
BOILERPLATE = "Report bugs to the maintainers of this package and include the version number please."
SPEC = LongDocSpec(min_tokens=400, max_tokens=1500, deep_from=200, queries_per_doc=2)


def _doc_text(lang: str, seed: int, n_sentences: int) -> str:
    rng = random.Random(seed)
    words = textgen.WORDS[lang] + textgen.FILLER[lang]
    sentences = [
        " ".join(rng.choices(words, k=rng.randint(5, 14))).capitalize() + "." for _ in range(n_sentences)
    ]
    sentences.insert(n_sentences - 3, BOILERPLATE)  # deep inside every document: never a query
    paragraphs = [" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5)]
    return "\n\n".join(paragraphs)


def _keys(split: SplitSpec) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"test": [], "train": [], "dev": []}
    i = 0
    while len(out["test"]) < 3 or len(out["train"]) < 6:
        key = f"man:page{i}.1"
        out[split.of(key)].append(key)
        i += 1
    return out


@pytest.fixture(scope="module")
def long_warehouse(tmp_path_factory):
    path = tmp_path_factory.mktemp("long-wh") / "warehouse.duckdb"
    keys = _keys(SplitSpec())
    docs = []
    for lang in LANGS:
        for j, key in enumerate(keys["test"][:3] + keys["train"][:6] + keys["dev"][:1]):
            docs.append((f"{lang}-{j}", lang, key, _doc_text(lang, 100 * j + LANGS.index(lang), 60)))
        # a short test-split page (past the character prefilter, under min_tokens tokens): not a long document
        docs.append((f"{lang}-short", lang, keys["test"][0], _doc_text(lang, 7, 60)[:400]))
    with Warehouse(path) as wh:
        for doc_id, lang, key, text in docs:
            wh.con.execute(
                "INSERT INTO documents (doc_id, source, lang, title, text, n_chars, group_key) "
                "VALUES (?, 'manpages', ?, '', ?, ?, ?)",
                [doc_id, lang, text, len(text), key],
            )
    return path, keys


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _beir(set_dir):
    corpus = {r["_id"]: r["text"] for r in map(json.loads, (set_dir / "corpus.jsonl").open(encoding="utf-8"))}
    queries = {
        r["_id"]: r["text"] for r in map(json.loads, (set_dir / "queries.jsonl").open(encoding="utf-8"))
    }
    qrels = [line.split("\t")[:2] for line in (set_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    return corpus, queries, qrels


def test_eval_sets_ask_for_deep_unique_sentences_of_test_documents(tmp_path, long_warehouse, tokenizer):
    path, keys = long_warehouse
    with Warehouse(path, read_only=True) as wh:
        originals = dict(wh.con.execute("SELECT doc_id, text FROM documents").fetchall())
        groups = dict(wh.con.execute("SELECT doc_id, group_key FROM documents").fetchall())
        index = export_long_eval_sets(wh, tmp_path, tokenizer, spec=SPEC)
    assert [m["name"] for m in index] == ["long-de", "long-en"]
    for meta in index:
        corpus, queries, qrels = _beir(tmp_path / meta["name"])
        lang = meta["lang"]
        # the corpus: every long document of the language, all splits; the short page is left out
        assert set(corpus) == {f"{lang}-{j}" for j in range(10)}
        assert meta["n_queries"] == len(queries) == len(qrels) >= 5
        assert meta["corpus_tokens"]["min"] >= SPEC.min_tokens
        assert meta["query_position"]["min"] >= SPEC.deep_from
        per_doc: dict[str, int] = {}
        for qid, doc_id in qrels:
            query = queries[qid]
            assert groups[doc_id] in keys["test"], "a query from a document outside the test split"
            per_doc[doc_id] = per_doc.get(doc_id, 0) + 1
            assert query != BOILERPLATE
            # the sentence was in the original, is gone from the corpus text, and occurs in no other document
            original = originals[doc_id]
            assert query in " ".join(original.split())
            assert all(query not in " ".join(text.split()) for text in corpus.values())
            # it starts past deep_from tokens of the original document
            start = " ".join(original.split()).index(query)
            n_before = len(
                tokenizer(" ".join(original.split())[:start], add_special_tokens=False)["input_ids"]
            )
            assert n_before + 1 >= SPEC.deep_from
        assert max(per_doc.values()) <= SPEC.queries_per_doc
    # the same export twice: the same files (a stable, seeded choice)
    again = tmp_path / "again"
    with Warehouse(path, read_only=True) as wh:
        export_long_eval_sets(wh, again, tokenizer, spec=SPEC)
    for meta in index:
        assert _beir(tmp_path / meta["name"]) == _beir(again / meta["name"])


def test_training_lines_come_from_the_train_split_only(tmp_path, long_warehouse, tokenizer):
    path, _ = long_warehouse
    out = tmp_path / "long-train.jsonl"
    with Warehouse(path, read_only=True) as wh:
        originals = wh.con.execute("SELECT text, group_key FROM documents").fetchall()
        counts = export_long_training(wh, out, tokenizer, spec=SPEC, negatives=2)
    examples, _ = read_jsonl(out)
    assert sorted(counts) == ["de", "en"] and sum(counts.values()) == len(examples)
    assert all(n >= 6 for n in counts.values())
    train_texts = [" ".join(t.split()) for t, key in originals if SplitSpec().of(key) == "train"]
    held_texts = [" ".join(t.split()) for t, key in originals if SplitSpec().of(key) != "train"]
    for e in examples:
        assert any(e.query in t for t in train_texts)
        assert not any(e.query in t for t in held_texts), "a training query from a held-out page"
        assert e.query not in " ".join(e.pos[0].split()) and len(e.neg) == 2 and e.pos[0] not in e.neg
    meta = json.loads((tmp_path / "long-train.jsonl.meta.json").read_text())
    assert meta["lines"] == counts and meta["split"] == "train"


def test_a_corpus_cap_keeps_every_query_document(tmp_path, long_warehouse, tokenizer):
    path, _ = long_warehouse
    spec = LongDocSpec(**{**SPEC.__dict__, "max_corpus_per_language": 4})
    with Warehouse(path, read_only=True) as wh:
        index = export_long_eval_sets(wh, tmp_path, tokenizer, spec=spec, min_queries=1)
    for meta in index:
        corpus, _, qrels = _beir(tmp_path / meta["name"])
        assert len(corpus) == 4 and {d for _, d in qrels} <= set(corpus)


def test_spec_and_sentence_rules():
    with pytest.raises(ValueError, match="min_tokens=400 must exceed deep_from=512"):
        LongDocSpec(min_tokens=400)
    with pytest.raises(ValueError, match="deep_from=9000"):
        LongDocSpec(deep_from=9000)
    text = "Eins zwei. Drei vier?\n\nFünf 六七。八"
    assert [text[s:e] for s, e in sentence_spans(text)] == ["Eins zwei.", "Drei vier?", "Fünf 六七。", "八"]
