"""Each source on small generated inputs: gettext (.po written and compiled), JSONL, Parquet, HF, man pages."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m3core.data.records import Document, Pair, Rejected
from m3core.data.sources.documents import DocumentDirSource
from m3core.data.sources.files import FieldMap, JsonlSource, ParquetSource, RowMapper
from m3core.data.sources.gettext import GettextSource
from m3core.data.sources.hf import HFDatasetSource
from m3core.data.sources.manpages import ManPageSource
from tests.support.data_fixtures import PO_TEMPLATE, write_man_tree


def _read_all(source):
    return [r for unit in source.units() for r in source.read(unit)]


def test_gettext_po_cleans_and_rejects_with_reasons(tmp_path):
    po = tmp_path / "app.po"
    po.write_text(PO_TEMPLATE.format(lang="de"))
    recs = _read_all(GettextSource((str(po),)))
    pairs = {r.query: r for r in recs if isinstance(r, Pair)}
    assert (
        pairs["Open the selected file in a new window"].positive
        == "Die ausgewählte Datei in einem neuen Fenster öffnen"
    )
    assert pairs["Save all changes before closing"].positive == "Alle Änderungen vor dem Schließen speichern"
    assert "msgctxt='menu'" in pairs["Save all changes before closing"].location
    plural = pairs["%d files were copied to the backup folder"]
    assert plural.positive.startswith("%d Dateien") and plural.location.endswith("[1]")
    assert all(p.lang == "de" and p.query_lang == "en" and p.kind == "translation" for p in pairs.values())
    reasons = Counter(r.reason for r in recs if isinstance(r, Rejected))
    assert reasons == {"untranslated": 2, "fuzzy": 1, "obsolete": 1}, (
        reasons
    )  # "Cancel" empty, "%s: %d" equal
    # Placeholder-only messages come out as pairs here; the pipeline rejects them (format-only).
    assert "%s (%s)" in pairs
    bad = next(r for r in recs if isinstance(r, Rejected) and r.reason == "fuzzy")
    assert str(po) in bad.location and "Print the current page" in bad.location


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="msgfmt (gettext) not installed")
def test_gettext_mo_compiled_by_msgfmt_language_from_locale_dir(tmp_path):
    po = tmp_path / "app.po"
    po.write_text(PO_TEMPLATE.format(lang=""))  # no Language header: the locale directory decides
    mo = tmp_path / "locale" / "pt_BR" / "LC_MESSAGES" / "app.mo"
    mo.parent.mkdir(parents=True)
    subprocess.run(["msgfmt", "-o", str(mo), str(po)], check=True)
    recs = _read_all(GettextSource((str(tmp_path / "locale" / "*" / "LC_MESSAGES" / "*.mo"),)))
    pairs = [r for r in recs if isinstance(r, Pair)]
    assert {p.lang for p in pairs} == {"pt-BR"}
    assert len(pairs) == 6  # as the .po minus fuzzy and obsolete (msgfmt drops them)
    assert all(str(mo) in p.location for p in pairs)


def test_gettext_unreadable_catalog_is_quarantined(tmp_path):
    bad = tmp_path / "de" / "LC_MESSAGES" / "broken.mo"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a catalog at all")
    (rec,) = _read_all(GettextSource((str(bad),)))
    assert isinstance(rec, Rejected) and rec.reason == "unreadable-catalog" and str(bad) in rec.location


def test_jsonl_bad_lines_are_rejected_with_line_numbers(tmp_path):
    f = tmp_path / "pairs.jsonl"
    lines = [
        json.dumps(
            {"question": "how do I copy files", "answer": ["use cp", "use rsync"], "lang": "en"}
        ).encode(),
        b'{"question": "broken json", ',
        b'{"question": "bad bytes \xff\xfe here", "answer": "x"}',
        b"",
        json.dumps({"question": "no answer field"}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
        json.dumps({"title": "A document", "text": "Body text of the document."}).encode(),
        json.dumps({"question": "which language?", "answer": "a number is none", "lang": 7}).encode(),
    ]
    f.write_bytes(b"\n".join(lines) + b"\n")
    src = JsonlSource([f], RowMapper("qa", FieldMap.parse("query=question,positive=answer"), lang="en"))
    recs = _read_all(src)
    pairs = [r for r in recs if isinstance(r, Pair)]
    assert [(p.positive, p.location) for p in pairs] == [("use cp", f"{f}:1[0]"), ("use rsync", f"{f}:1[1]")]
    rejected = {r.location: r.reason for r in recs if isinstance(r, Rejected)}
    assert rejected == {
        f"{f}:2": "malformed-json",
        f"{f}:3": "invalid-utf8",
        f"{f}:5": "missing-field",
        f"{f}:6": "not-an-object",
        f"{f}:8": "bad-lang",
    }
    docs = [r for r in recs if isinstance(r, Document)]
    assert [d.title for d in docs] == ["A document"]


def test_field_map_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        FieldMap.parse("query=q,answer=a")


def test_parquet_rows(tmp_path):
    f = tmp_path / "p.parquet"
    pq.write_table(
        pa.table(
            {
                "q": ["what is a kernel", "what is a shell"],
                "p": ["the core of the OS", ""],
                "lang": ["en", "en"],
            }
        ),
        f,
    )
    recs = _read_all(ParquetSource([f], RowMapper("pq", FieldMap(query="q", positive="p"))))
    assert [(r.query, r.positive, r.location) for r in recs] == [
        ("what is a kernel", "the core of the OS", f"{f}#row=0"),
        ("what is a shell", "", f"{f}#row=1"),  # empty text: the pipeline rejects it
    ]


def test_hf_dataset_source_local_json(tmp_path):
    f = tmp_path / "miracl-like.jsonl"
    rows = [
        {
            "query": "Wer schrieb Faust?",
            "positive_passages": [{"docid": "1", "title": "Faust", "text": "Goethe schrieb Faust."}],
        },
        {
            "query": "Hauptstadt von Frankreich",
            "positive_passages": [{"docid": "2", "title": "Paris", "text": "Paris ist die Hauptstadt."}],
        },
    ]
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    src = HFDatasetSource(
        "json",
        RowMapper("miracl-de", FieldMap(positive="positive_passages"), lang="de"),
        data_files=[str(f)],
        shard_rows=1,
    )
    assert len(src.units()) == 2
    recs = _read_all(src)
    assert [(r.query, r.positive, r.lang) for r in recs] == [
        ("Wer schrieb Faust?", "Goethe schrieb Faust.", "de"),
        ("Hauptstadt von Frankreich", "Paris ist die Hauptstadt.", "de"),
    ]
    assert recs[1].location == "json[train]#row=1"


def test_man_pages_render_documents_pairs_and_aliases(tmp_path):
    root = write_man_tree(tmp_path / "man")
    assert sum(len(u) for u in ManPageSource(root).units()) == 12  # default: English pages with a translation
    recs = _read_all(ManPageSource(root, english="all"))
    docs = [r for r in recs if isinstance(r, Document)]
    pairs = [r for r in recs if isinstance(r, Pair)]
    rejected = [r for r in recs if isinstance(r, Rejected)]
    assert Counter(d.lang for d in docs) == {"en": 6, "de": 6}
    de = next(p for p in pairs if p.lang == "de" and p.group_key == "man:copyfiles.1")
    assert de.query == "Dateien sicher zwischen zwei Verzeichnissen kopieren"
    assert (
        de.positive.startswith("Das Programm copyfiles verarbeitet Dateien")
        and "BESCHREIBUNG" not in de.positive
    )
    assert de.doc_id == next(d.doc_id for d in docs if d.location == de.location.split("#")[0])
    assert sorted(r.reason for r in rejected) == ["alias", "alias"]
    assert any("symlink" in r.detail for r in rejected)


def test_document_dir_language_from_subdir_and_invalid_utf8(tmp_path):
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "a.txt").write_text("Titel\n\nEin deutscher Text.")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "b.md").write_text("# Heading\nSome text.")
    (tmp_path / "c.txt").write_bytes(b"ok \xff bad")
    recs = _read_all(DocumentDirSource(tmp_path))
    got = {
        (type(r).__name__, getattr(r, "lang", None), getattr(r, "title", getattr(r, "reason", "")))
        for r in recs
    }
    assert got == {
        ("Document", "de", "Titel"),
        ("Document", "und", "Heading"),
        ("Rejected", "und", "invalid-utf8"),
    }
