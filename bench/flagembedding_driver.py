"""Runs FlagEmbedding's `BGEM3FlagModel` (the reference) for the benches, inside FlagEmbedding's own venv.

Not imported by the project: `conformance_flagembedding.py` and `encode.py` start it with the reference venv's
python and read what it writes. It needs only FlagEmbedding (with its transformers<5), numpy, torch and
`bench/_common.py` — never `m3core`. Two modes:

`flagembedding_driver.py REQUEST.json` — batch: `{"task": "conformance", "threads": N, "jobs": [...]}`, each job
    {"model_dir", "out", "texts", "max_length", "batch_size", "pairs", "weights", "max_query_length",
     "max_passage_length"} → `out` (.npz): token ids, dense, colbert (concatenated + offsets), lexical weights
    and `compute_score` results (batched, and one pair per call) as JSON. A job with `"kind": "tokenize"`
    ({"model_dir", "out", "texts", "max_length"}) only writes the token ids of the directory's tokenizer.

`flagembedding_driver.py --serve` — timing server: one JSON command per stdin line, one JSON reply per stdout
    line, so the caller can alternate reference and own runs on a busy machine:
    {"cmd": "load", "model_dir", "threads"} → environment info;
    {"cmd": "time", "texts", "max_length", "batch_size", "outputs": "dense" | "all", "warmup": bool} → seconds
    of one full `encode` call; {"cmd": "quit"}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import env_summary, pin_threads


def load(model_dir: str):
    """`BGEM3FlagModel` on CPU in fp32. It sizes `colbert_linear` from its `colbert_dim` argument, not from the
    saved weights, so a ColBERT size other than the hidden size has to be passed (we read it from our config)."""
    from FlagEmbedding import BGEM3FlagModel

    colbert_dim = -1
    config = Path(model_dir) / "m3_config.json"
    if config.is_file():
        colbert_dim = json.loads(config.read_text()).get("colbert_dim") or -1
    return BGEM3FlagModel(model_dir, use_fp16=False, devices="cpu", colbert_dim=colbert_dim)


def ragged(arrays: list[np.ndarray], dtype) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate along axis 0 and keep the offsets, so a list of matrices fits in one .npz entry."""
    offsets = np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)
    flat = np.concatenate([np.asarray(a, dtype=dtype) for a in arrays], axis=0) if arrays else np.zeros(0)
    return flat, offsets


def tokenize(job: dict) -> None:
    """Token ids of `texts` by the directory's own tokenizer, as FlagEmbedding loads it (`AutoTokenizer`)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(job["model_dir"])
    ids = tok(job["texts"], truncation=True, max_length=job["max_length"])["input_ids"]
    flat, offsets = ragged([np.array(x) for x in ids], np.int64)
    np.savez(job["out"], ids=flat, id_offsets=offsets)


def conformance(req: dict, model) -> None:
    texts, max_length = req["texts"], req["max_length"]
    ids = model.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    out = model.encode(
        texts,
        batch_size=req["batch_size"],
        max_length=max_length,
        return_dense=True,
        return_sparse=True,
        return_colbert_vecs=True,
    )
    pairs = [tuple(p) for p in req["pairs"]]
    score_args = {
        "max_query_length": req["max_query_length"],
        "max_passage_length": req["max_passage_length"],
        "weights_for_different_modes": req["weights"],
    }
    batched = model.compute_score(pairs, batch_size=req["batch_size"], **score_args)
    # One pair per call: no padding in the passage batch, so no padding vector can win ColBERT's max.
    single = [model.compute_score([p], batch_size=1, **score_args) for p in pairs]
    per_pair = {k: [float(s[k][0]) for s in single] for k in batched}
    flat_ids, id_offsets = ragged([np.array(x) for x in ids], np.int64)
    flat_colbert, colbert_offsets = ragged(out["colbert_vecs"], np.float32)
    lexical = [{k: float(v) for k, v in d.items()} for d in out["lexical_weights"]]
    np.savez(
        req["out"],
        ids=flat_ids,
        id_offsets=id_offsets,
        dense=np.asarray(out["dense_vecs"], dtype=np.float32),
        colbert=flat_colbert,
        colbert_offsets=colbert_offsets,
        lexical=json.dumps(lexical),
        scores=json.dumps({k: [float(x) for x in v] for k, v in batched.items()}),
        scores_per_pair=json.dumps(per_pair),
    )


def encode_kwargs(case: dict) -> dict:
    return {
        "batch_size": case["batch_size"],
        "max_length": case["max_length"],
        "return_dense": True,
        "return_sparse": case["outputs"] == "all",
        "return_colbert_vecs": case["outputs"] == "all",
    }


def versions(threads: int) -> dict:
    info = env_summary(threads)
    try:
        import FlagEmbedding
        import transformers

        info["flagembedding"] = getattr(FlagEmbedding, "__version__", "?")
        info["transformers"] = transformers.__version__
    except Exception:  # versions are for the report only
        pass
    return info


def serve() -> int:
    """The timing server (see the module docstring). Library prints go to stderr: stdout carries replies."""
    reply_to = sys.stdout
    sys.stdout = sys.stderr
    model = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "load":
            threads = pin_threads(int(cmd["threads"]))
            model = load(cmd["model_dir"])
            reply = versions(threads)
        elif cmd["cmd"] == "time":
            kwargs, texts = encode_kwargs(cmd), cmd["texts"]
            if cmd.get("warmup"):  # allocator, thread pool, lazy imports
                model.encode(texts[:32], **kwargs)
            start = time.perf_counter()
            model.encode(texts, **kwargs)
            reply = {"seconds": time.perf_counter() - start}
        else:
            raise ValueError(f"unknown command {cmd['cmd']!r}")
        reply_to.write(json.dumps(reply) + "\n")
        reply_to.flush()
    return 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["--serve"]:
        return serve()
    req = json.loads(Path(argv[1]).read_text())
    threads = pin_threads(int(req["threads"]))
    print(json.dumps(versions(threads)), file=sys.stderr)
    models: dict[str, object] = {}  # one load per directory: importing and loading dominate small jobs
    for job in req["jobs"]:
        if job.get("kind") == "tokenize":
            tokenize(job)
            continue
        if job["model_dir"] not in models:
            models.clear()
            models[job["model_dir"]] = load(job["model_dir"])
        conformance(job, models[job["model_dir"]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
