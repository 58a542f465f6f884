"""Exports: FlagEmbedding training JSONL (stable train/dev/test split) and BEIR evaluation sets.

The split is a hash of each pair's `group_key`, not of the pair: all translations of one man page (and
all translations of one English UI string) land in the same split, so a page whose summary is a test
query never has its description in training — in any language.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from m3core.data.examples import Example, write_jsonl
from m3core.data.records import content_hash
from m3core.data.warehouse import Warehouse

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
DEFAULT_TRAIN_KINDS = ("title-body", "question-answer", "synthetic")


@dataclass(frozen=True)
class SplitSpec:
    """Fractions of groups in dev and test (the rest is train)."""

    # 10 % dev: the hybrid weights are chosen there after every retrain, and at 5 % (about ten queries per set in
    # the embedded default) the choice followed noise. Widening dev moves pages out of train only: test, which
    # the promotion decision reads, keeps exactly its pages, so no earlier model has trained on a test page.
    dev: float = 0.10
    test: float = 0.10

    def __post_init__(self) -> None:
        if not (self.dev >= 0 and self.test >= 0 and self.dev + self.test < 1):
            raise ValueError(f"split fractions dev={self.dev} test={self.test} must be >= 0 and sum below 1")

    def of(self, group_key: str) -> str:
        """The split of a group: a pure function of the key (stable across runs and machines).

        >>> s = SplitSpec(); s.of("man:ls.1") == s.of("man:ls.1") and s.of("man:ls.1") in SPLITS
        True
        """
        u = int(content_hash("split", group_key)[:8], 16) / 0xFFFFFFFF
        return "test" if u < self.test else "dev" if u < self.test + self.dev else "train"


def _rank(*parts: str) -> str:
    return content_hash("rank", *parts)


def export_training(
    wh: Warehouse,
    out_dir: Path,
    *,
    kinds: Sequence[str] = DEFAULT_TRAIN_KINDS,
    langs: Sequence[str] | None = None,
    max_per_language: int | None = None,
    negatives: int = 3,
    split: SplitSpec | None = None,
) -> dict[str, dict[str, int]]:
    """Write `train.jsonl`, `dev.jsonl`, `test.jsonl` (FlagEmbedding lines) and `meta.json` to `out_dir`.

    Pairs with one query and language are merged into one line with several positives.
    `max_per_language` keeps a stable sample of queries per (kind, query language, language).
    `negatives` random negatives per line: positives of other queries of the same split, kind and
    language (FlagEmbedding needs at least one; the negatives stage replaces them with hard ones).
    Returns lines per split per "kind:query_lang->lang".
    """
    split = split or SplitSpec()
    sql = "SELECT kind, query_lang, lang, query, positive, group_key FROM pairs WHERE kind IN ?"
    params: list = [list(kinds)]
    if langs:
        sql += " AND lang IN ? AND query_lang IN ?"
        params += [list(langs), list(langs)]
    groups: dict[tuple[str, str, str], dict[str, tuple[str, list[str]]]] = defaultdict(dict)
    for kind, qlang, lang, query, positive, group_key in wh.con.execute(
        sql + " ORDER BY pair_id", params
    ).fetchall():
        entry = groups[(kind, qlang, lang)].setdefault(query, (group_key, []))
        entry[1].append(positive)
    lines: dict[str, list[Example]] = {s: [] for s in SPLITS}
    counts: dict[str, dict[str, int]] = {s: defaultdict(int) for s in SPLITS}
    for (kind, qlang, lang), by_query in sorted(groups.items()):
        ordered = sorted(by_query.items(), key=lambda kv: _rank(kind, kv[0]))
        if max_per_language is not None:
            ordered = ordered[:max_per_language]
        per_split: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
        for query, (group_key, positives) in ordered:
            per_split[split.of(group_key or query)].append((query, positives))
        for name, items in per_split.items():
            for i, (query, positives) in enumerate(items):
                neg: list[str] = []
                j = i + 1
                while len(neg) < negatives and j < i + len(items):
                    cand = items[j % len(items)][1][0]
                    if cand not in positives and cand not in neg:
                        neg.append(cand)
                    j += 1
                lines[name].append(Example(query=query, pos=positives, neg=neg))
                counts[name][f"{kind}:{qlang}->{lang}"] += 1
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, examples in lines.items():
        write_jsonl(examples, out_dir / f"{name}.jsonl")
    meta = {
        "kinds": list(kinds),
        "langs": list(langs) if langs else None,
        "max_per_language": max_per_language,
        "negatives": negatives,
        "split": {"dev": split.dev, "test": split.test},
        "lines": {s: dict(c) for s, c in counts.items()},
        "warehouse": str(wh.path),
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    log.info("training export %s: %s", out_dir, {s: len(v) for s, v in lines.items()})
    return meta["lines"]


def _write_beir(
    set_dir: Path, corpus: dict[str, str], queries: dict[str, str], qrels: list[tuple[str, str]], meta: dict
) -> None:
    (set_dir / "qrels").mkdir(parents=True, exist_ok=True)
    with open(set_dir / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for cid, text in corpus.items():
            fh.write(json.dumps({"_id": cid, "title": "", "text": text}, ensure_ascii=False) + "\n")
    with open(set_dir / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with open(set_dir / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, cid in qrels:
            fh.write(f"{qid}\t{cid}\t1\n")
    (set_dir / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))


def export_eval_sets(
    wh: Warehouse,
    out_dir: Path,
    *,
    source: str = "manpages",
    which: str = "test",
    langs: Sequence[str] | None = None,
    max_queries: int | None = None,
    min_queries: int = 10,
    split: SplitSpec | None = None,
) -> list[dict]:
    """BEIR sets from man-page pairs, one directory per set under `out_dir`:

    - `man-<L>` (monolingual): NAME-line summary in L → that page's DESCRIPTION in L; corpus = every
      page description in L.
    - `man-<X>-en` (cross-lingual): summary in X → the English page of the same name; corpus = every
      English page description.
    Queries come from split `which` only (never trained on); sets with fewer than `min_queries` are skipped.
    Returns the sets' meta (also written to `out_dir/index.json`).
    """
    split = split or SplitSpec()
    rows = wh.con.execute(
        "SELECT query_lang, lang, query, positive, group_key FROM pairs "
        "WHERE source = ? AND kind = 'title-body' ORDER BY group_key, query_lang, lang, pair_id",
        [source],
    ).fetchall()
    corpus: dict[str, dict[str, str]] = defaultdict(dict)  # lang -> page id -> description
    queries: dict[tuple[str, str], dict[str, tuple[str, str]]] = defaultdict(
        dict
    )  # (qlang, lang) -> qid -> (text, page)
    for qlang, lang, query, positive, group_key in rows:
        page = group_key.removeprefix("man:")
        if qlang == lang:
            corpus[lang].setdefault(page, positive)
        if split.of(group_key) == which:
            queries[(qlang, lang)].setdefault(f"{qlang}:{page}", (query, page))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = []
    for (qlang, lang), qs in sorted(queries.items()):
        if langs and qlang not in langs:
            continue
        kept = {qid: qp for qid, qp in qs.items() if qp[1] in corpus.get(lang, {})}
        ordered = sorted(kept.items(), key=lambda kv: _rank("eval", kv[0]))[: max_queries or None]
        name = f"man-{qlang}" if qlang == lang else f"man-{qlang}-{lang}"
        if len(ordered) < min_queries:
            log.info("eval set %s: %d queries (< %d): skipped", name, len(ordered), min_queries)
            continue
        meta = {
            "name": name,
            "lang": lang if qlang == lang else qlang,
            "query_lang": qlang,
            "corpus_lang": lang,
            "kind": "monolingual" if qlang == lang else "cross-lingual",
            "n_queries": len(ordered),
            "n_corpus": len(corpus[lang]),
            "split": which,
            "source": source,
        }
        _write_beir(
            out_dir / name,
            corpus[lang],
            {qid: text for qid, (text, _) in ordered},
            [(qid, page) for qid, (_, page) in ordered],
            meta,
        )
        index.append(meta)
    (out_dir / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False))
    log.info("eval export %s: %d sets", out_dir, len(index))
    return index


def export_run(
    wh: Warehouse,
    out_dir: Path,
    *,
    langs: Sequence[str] | None = None,
    max_per_language: int | None = None,
    max_queries: int | None = None,
    dev_max_queries: int | None = None,
) -> dict:
    """Everything one training run reads, under `out_dir`: training JSONL from the train split (`train/`),
    held-out BEIR sets from the test split (`eval/`) and BEIR sets from the dev split (`dev/`, for choosing the
    hybrid weights). `m3 export run OUT` and the retrain flow's export step.

    The dev split is small (10 % of pages), so sets with a few queries (>= 5) still count there.
    Raises ValueError when the warehouse gives no held-out set (nothing to evaluate on).
    """
    out_dir = Path(out_dir)
    sets = export_eval_sets(wh, out_dir / "eval", langs=langs, max_queries=max_queries)
    if not sets:
        raise ValueError(
            f"{wh.path}: the warehouse gave no evaluation set for languages {list(langs or []) or 'any'}: "
            "mine more man pages"
        )
    lines = export_training(wh, out_dir / "train", langs=langs, max_per_language=max_per_language)
    dev = export_eval_sets(
        wh, out_dir / "dev", which="dev", langs=langs, max_queries=dev_max_queries, min_queries=5
    )
    return {
        "train_file": str(out_dir / "train" / "train.jsonl"),
        "train_lines": {k: sum(v.values()) for k, v in lines.items()},
        "eval_dir": str(out_dir / "eval"),
        "eval_sets": [s["name"] for s in sets],
        "dev_dir": str(out_dir / "dev") if dev else None,
        "dev_sets": [s["name"] for s in dev],
        "data_snapshot": wh.snapshot(),
    }
