"""Encoding throughput: our `M3Embedder` against FlagEmbedding's `BGEM3FlagModel`, same weights, same inputs.

    .venv/bin/python bench/conformance_flagembedding.py --setup-only   # once: the reference venv
    .venv/bin/python bench/encode.py [--quick] [--threads 2] [--budgets 8192,16384,65536]

Model: the real multilingual backbone (multilingual-e5-small, 12 layers, hidden 384, from
`m3 backbone fetch multilingual-e5-small`) with M3 heads, saved once by our `save_pretrained` so both sides read the
same files. Inputs: short multilingual sentences (~20-40 tokens) and long passages (~500 tokens). Outputs: the
dense vector alone, and all three (dense + lexical weights + ColBERT vectors). Each figure is the best of
`--repeats` full `encode` calls (strings in, numpy out: tokenization, padding and post-processing included),
after one warm-up call on a slice. The reference stays loaded in its own venv (`flagembedding_driver.py
--serve`, a subprocess) and the two sides alternate call by call, never at once, so load from other processes
on a shared machine hits both alike. Both pin torch to `--threads` intra-op threads. FlagEmbedding's `encode`
runs its first (longest) batch twice (a batch-size probe); that is part of its cost as users get it.

Model FLOP/s counts the forward pass on the real (unpadded) tokens: per layer 2·n·(4H² + 2·H·F) for the
projections and feed-forward plus 4·n²·H for attention scores and the weighted sum, plus the heads; the
fraction is against a large fp32 `torch.mm` measured in the same process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import env_summary, make_texts, matmul_peak_flops, pin_threads, print_table
from conformance_flagembedding import (
    DRIVER,
    OFFLINE_ENV,
    ROOT,
    VENV,
    build_models,
    reference_python,
    reference_ready,
)

BENCH_DIR = ROOT / ".cache" / "bench"


def forward_flops(lengths: list[int], config, colbert_dim: int, outputs: str) -> float:
    """Forward FLOPs of an encoder over texts of the given (unpadded) token lengths (see module docstring)."""
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = sum(lengths)
    squares = sum(n * n for n in lengths)
    per_layer = 2 * tokens * (4 * h * h + 2 * h * f) + 4 * squares * h
    heads = 2 * tokens * h * (colbert_dim + 1) if outputs == "all" else 0
    return float(layers * per_layer + heads)


def prepare_model(workdir: Path) -> Path:
    """The e5-small backbone with fresh (seeded) heads, saved by us; reused across runs."""
    target = workdir / "e5"
    if (target / "colbert_linear.pt").is_file():
        return target
    return build_models(workdir, ["e5"])["e5"][0]


class ReferenceServer:
    """FlagEmbedding in its venv, kept loaded (`flagembedding_driver.py --serve`), timed one call at a time."""

    def __init__(self, model_dir: Path, threads: int, log: Path):
        env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self._log = log.open("w")
        self._proc = subprocess.Popen(
            [str(reference_python()), str(DRIVER), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self.info = self._ask({"cmd": "load", "model_dir": str(model_dir), "threads": threads})

    def _ask(self, cmd: dict) -> dict:
        self._proc.stdin.write(json.dumps(cmd, ensure_ascii=False) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise SystemExit(
                f"the FlagEmbedding driver died (exit {self._proc.wait()}); see {self._log.name}"
            )
        return json.loads(line)

    def time(self, case: dict, warmup: bool) -> float:
        keys = ("texts", "max_length", "batch_size", "outputs")
        return self._ask({"cmd": "time", "warmup": warmup, **{k: case[k] for k in keys}})["seconds"]

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._ask_quit()
        self._proc.wait(timeout=60)
        self._log.close()

    def _ask_quit(self) -> None:
        self._proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self._proc.stdin.close()


def time_ours(embedder, case: dict, warmup: bool) -> float:
    """Seconds of one full `encode` call of ours (after a warm-up call on a slice when asked)."""
    kwargs = {
        "batch_size": case["batch_size"],
        "max_length": case["max_length"],
        "return_dense": True,
        "return_sparse": case["outputs"] == "all",
        "return_colbert_vecs": case["outputs"] == "all",
    }
    if warmup:
        embedder.encode(case["texts"][:32], **kwargs)
    start = time.perf_counter()
    embedder.encode(case["texts"], **kwargs)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs (256 short, 24 long texts)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="best of N, reference and ours alternating")
    parser.add_argument("--n-short", type=int, default=None, help="short texts (default 3000, --quick 256)")
    parser.add_argument("--n-long", type=int, default=None, help="long texts (default 200, --quick 24)")
    parser.add_argument(
        "--budgets",
        default="",
        help="extra runs of ours with these max_batch_tokens values (comma list), all three outputs",
    )
    parser.add_argument("--no-reference", action="store_true", help="ours only (no FlagEmbedding venv)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.update(OFFLINE_ENV)
    n_short = args.n_short or (256 if args.quick else 3000)
    n_long = args.n_long or (24 if args.quick else 200)
    if not args.no_reference and not reference_ready():
        print(
            f"no FlagEmbedding venv at {VENV}: run conformance_flagembedding.py --setup-only", file=sys.stderr
        )
        return 2

    threads = pin_threads(args.threads)
    peak_start = matmul_peak_flops()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    model_dir = prepare_model(BENCH_DIR)

    from m3core.embedder import M3Embedder

    emb = M3Embedder(model_dir, use_fp16=False, device="cpu", show_progress=False)
    cfg = emb.model.backbone.config
    colbert_dim = emb.model.colbert_head.dim
    inputs = {
        "short": (make_texts(n_short, (1, 2), seed=11), 512),
        "long": (make_texts(n_long, (28, 36), seed=13), 512),
    }
    cases = []
    for name, (texts, max_length) in inputs.items():
        lengths = [len(x) for x in emb.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
        for outputs in ("dense", "all"):
            cases.append(
                {
                    "name": name,
                    "texts": texts,
                    "max_length": max_length,
                    "batch_size": 256,  # both libraries' default
                    "outputs": outputs,
                    "lengths": lengths,
                }
            )

    # Reference and ours alternate, run by run, so a burst of load on this shared machine hits both sides
    # alike; best of `repeats` per side. Never concurrent: the idle side waits on a pipe.
    server = None if args.no_reference else ReferenceServer(model_dir, threads, BENCH_DIR / "reference.log")
    default_budget = emb.max_batch_tokens
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]

    def ours_with(budget: int):
        def run(case: dict, warmup: bool) -> float:
            emb.max_batch_tokens = budget
            return time_ours(emb, case, warmup)

        return run

    # Every variant of a case runs once per round, in turn (reference, ours, ours with other token budgets), so
    # a burst of load from other processes on this shared machine hits all alike; best of `repeats` rounds.
    # Never concurrent: the reference waits on its pipe while ours runs.
    seconds: dict[tuple[str, str, str], float] = {}
    for c in cases:
        variants = [("ours", ours_with(default_budget))]
        if server is not None:
            variants.insert(0, ("FlagEmbedding", server.time))
        if c["outputs"] == "all":
            variants += [(f"ours, max_batch_tokens={b}", ours_with(b)) for b in budgets]
        for r in range(args.repeats):
            for side, run in variants:
                key = (c["name"], c["outputs"], side)
                seconds[key] = min(seconds.get(key, float("inf")), run(c, r == 0))
    emb.max_batch_tokens = default_budget
    if server is not None:
        server.close()
    peak = max(peak_start, matmul_peak_flops())

    rows, figures = [], []

    def add(case: dict, side: str, seconds: float, ratio: str) -> None:
        tokens = sum(case["lengths"])
        flops = forward_flops(case["lengths"], cfg, colbert_dim, case["outputs"]) / seconds
        rows.append(
            [
                f"{case['name']} ({len(case['texts'])} texts, {tokens / len(case['texts']):.0f} tok avg)",
                "dense" if case["outputs"] == "dense" else "dense+sparse+colbert",
                side,
                f"{seconds:.2f}",
                f"{len(case['texts']) / seconds:.1f}",
                f"{tokens / seconds:.0f}",
                f"{flops / 1e9:.1f}",
                f"{100 * flops / peak:.0f}%",
                ratio,
            ]
        )
        figures.append(
            {
                "case": case["name"],
                "outputs": case["outputs"],
                "side": side,
                "seconds": seconds,
                "tokens": tokens,
            }
        )

    for c in cases:
        ref = seconds.get((c["name"], c["outputs"], "FlagEmbedding"))
        for (name, outputs, side), t in seconds.items():
            if (name, outputs) == (c["name"], c["outputs"]):
                ratio = f"{ref / t:.2f}x" if ref and side != "FlagEmbedding" else ""
                add(c, side, t, ratio)

    env = env_summary(threads)
    print(
        f"\nencode throughput: {Path(model_dir).name} (hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers), "
        f"fp32, CPU '{env['cpu']}', torch {env['torch']}, {threads} threads pinned on both sides, "
        f"best of {args.repeats}, alternating; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (2048^3 torch.mm, same run); "
        f"ours default max_batch_tokens={M3Embedder.__init__.__kwdefaults__['max_batch_tokens']}"
    )
    print_table(
        ["inputs", "outputs", "side", "s", "texts/s", "tokens/s", "model GFLOP/s", "of peak", "ours/ref"],
        rows,
    )
    if args.json:
        args.json.write_text(json.dumps({"env": env, "peak_flops": peak, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"\n(bench took {time.perf_counter() - t0:.0f} s)")
    sys.exit(code)
