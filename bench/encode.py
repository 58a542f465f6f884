"""Encoding throughput: our `M3Embedder` (torch, ONNX fp32, ONNX int8) against FlagEmbedding's `BGEM3FlagModel`.

    .venv/bin/python bench/conformance_flagembedding.py --setup-only   # once: the reference venv
    .venv/bin/python bench/encode.py [--quick] [--threads 2] [--cases short,long,mixed] [--budgets 8192,16384]
    .venv/bin/python bench/encode.py --by-length --model DIR [--lengths 512,1024,2048,4096,8192] [--threads 2]

Model: the real multilingual backbone (multilingual-e5-small, 12 layers, hidden 384, from
`m3 backbone fetch multilingual-e5-small`) with M3 heads, saved once by our `save_pretrained` so every side reads
the same weights; its ONNX export (`m3 export-onnx --int8`: `model.onnx` fp32 and `model.int8.onnx`) is made
once next to it in the bench cache and reused while it is newer than the model directory. Inputs: short
multilingual sentences (~20-40 tokens), long passages (~500 tokens), and a mixed corpus (half short queries, half
passages of ~100-500 tokens, in a random order). Outputs: the dense vector alone, and all three (dense + lexical
weights + ColBERT vectors). Sides: `FlagEmbedding`, `ours-torch`, `ours-onnx-fp32`, `ours-onnx-int8` (the same
`M3Embedder` code, tokenization and batching; only the backend differs). Each figure is the best of `--repeats`
full `encode` calls (strings in, numpy out: tokenization, padding and post-processing included), after one
warm-up call on a slice. The reference stays loaded in its own venv (`flagembedding_driver.py --serve`, a
subprocess) and all sides take turns call by call, never at once, so load from other processes on a shared
machine hits them alike. Every side is pinned to `--threads` intra-op threads (torch's on the torch sides,
onnxruntime's session threads on the ONNX sides). FlagEmbedding's `encode` runs its first (longest) batch twice
(a batch-size probe); that is part of its cost as users get it.

Model FLOP/s counts the forward pass on the real (unpadded) tokens: per layer 2·n·(4H² + 2·H·F) for the
projections and feed-forward plus 4·n²·H for attention scores and the weighted sum, plus the heads; the
fraction is against a large fp32 `torch.mm` measured in the same process (int8 is held to the same fp32 count
and peak, so its fraction says how much faster than fp32 matmuls it runs, and can pass 100%).

`--by-length` is a separate part (it runs alone, and needs neither FlagEmbedding nor ONNX): tokens/s of ours-torch
(fp32 on CPU, the backbone's SDPA attention) on `--model DIR` (a model whose positions take the longest length,
e.g. multilingual-e5-small after `m3 extend-positions --max-length 8192`) for texts of exactly each of `--lengths`
tokens (`_common.exact_length_texts`: the multilingual sentences cut after a token, special tokens included),
`--texts-per-length` of them, dense only and all three outputs, each with `batch_size=1` and with the default
token budget (`max_batch_tokens`; at 8192 tokens it holds 4 texts), plus the MCLS path (`encode(..., mcls=True)`,
default budget, dense only: MCLS changes only the dense vector) at lengths from `--mcls-from`. One untimed
warm-up call on one 512-token text, then per length every configuration once per round, best of `--repeats`
(default 1). Tokens and FLOPs count what the model runs (with
MCLS: the inserted CLS tokens too, capped at the model's positions). Peak RSS: the process's VmHWM during the
call, reset before it, and how far above the RSS before the call that is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    env_summary,
    exact_length_texts,
    forward_flops,
    make_texts,
    matmul_peak_flops,
    pin_threads,
    print_table,
    proc_status_kib,
    reset_peak_rss,
)
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
CASES = ("short", "long", "mixed")
REFERENCE = "FlagEmbedding"
TORCH = "ours-torch"
ONNX_SIDES = {"ours-onnx-fp32": "fp32", "ours-onnx-int8": "int8"}  # side → `onnx_variant`
# The goals, per row, as multiples of FlagEmbedding's texts/s.
GOALS = {"ours-onnx-fp32": 1.5, "ours-onnx-int8": 3.0}


def prepare_model(workdir: Path) -> Path:
    """The e5-small backbone with fresh (seeded) heads, saved by us; reused across runs."""
    target = workdir / "e5"
    if (target / "colbert_linear.pt").is_file():
        return target
    return build_models(workdir, ["e5"])["e5"][0]


def prepare_onnx(model_dir: Path) -> Path:
    """`m3 export-onnx MODEL_DIR <cache>/e5-onnx --int8`, once: reused while it is an int8 export of `model_dir`
    newer than every file there. Run as a subprocess: the export peaks at ~4 GB, which this process then keeps."""
    from m3core.config import CONFIG_NAME
    from m3core.onnx_runtime import onnx_manifest

    target = model_dir.parent / f"{model_dir.name}-onnx"
    manifest = onnx_manifest(target)
    if (
        manifest is not None
        and "int8" in manifest["files"]
        and manifest.get("source") == str(model_dir)
        and (target / CONFIG_NAME).stat().st_mtime >= max(f.stat().st_mtime for f in model_dir.iterdir())
    ):
        return target
    m3 = Path(sys.executable).parent / "m3"
    print(f"exporting {model_dir} to ONNX (fp32 + int8) in {target} ...", file=sys.stderr)
    subprocess.run([str(m3), "export-onnx", str(model_dir), str(target), "--int8", "--overwrite"], check=True)
    return target


def mixed_texts(n: int, seed: int) -> list[str]:
    """`n` texts: half short queries (1-2 sentences, ~15-45 tokens), half passages (8-31 sentences, ~100-500
    tokens), shuffled (seeded) so neither side gets them grouped by kind."""
    n_queries = n // 2
    texts = make_texts(n_queries, (1, 2), seed=seed) + make_texts(n - n_queries, (8, 31), seed=seed + 1)
    random.Random(seed).shuffle(texts)
    return texts


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


def _fmt_load(load) -> str:
    return "/".join(f"{x:.1f}" for x in load)


def by_length(args: argparse.Namespace) -> int:
    """The `--by-length` part: ours-torch tokens/s on texts of exact token lengths (see the module docstring)."""
    from m3core.embedder import M3Embedder
    from m3core.mcls import insert_cls

    lengths = sorted({int(x) for x in args.lengths.split(",") if x.strip()})
    threads = pin_threads(args.threads)
    repeats = args.repeats or 1
    load_start = os.getloadavg()
    peak_start = matmul_peak_flops()
    emb = M3Embedder(args.model, use_fp16=False, device="cpu", show_progress=False)
    cfg = emb.model.backbone.config
    colbert_dim = emb.model.colbert_head.dim
    if lengths[-1] > emb.model.max_tokens:
        raise SystemExit(
            f"--lengths up to {lengths[-1]}, but {args.model} takes {emb.model.max_tokens} tokens: "
            "extend its positions first (m3 extend-positions MODEL_DIR OUT_DIR --max-length N)"
        )
    budget = emb.max_batch_tokens
    stride, cls_id = emb.config.mcls_stride, emb.tokenizer.cls_token_id
    # (label, batch_size, outputs, mcls)
    configs = [
        ("batch 1", 1, "dense", False),
        ("batch 1", 1, "all", False),
        (f"budget {budget}", 256, "dense", False),
        (f"budget {budget}", 256, "all", False),
    ]
    mcls_configs = [(f"budget {budget}", 256, "dense", True)]  # MCLS changes the dense vector only

    def run(
        texts: list[str], length: int, batch_size: int, outputs: str, mcls: bool
    ) -> tuple[float, float, float]:
        """Seconds, peak RSS (MiB) and how far above the RSS before the call, of one `encode` call."""
        reset_peak_rss()
        before = proc_status_kib("VmRSS")
        start = time.perf_counter()
        emb.encode(
            texts,
            batch_size=batch_size,
            max_length=length,
            return_dense=True,
            return_sparse=outputs == "all",
            return_colbert_vecs=outputs == "all",
            mcls=mcls,
        )
        seconds = time.perf_counter() - start
        peak = proc_status_kib("VmHWM")
        return seconds, peak / 1024, (peak - before) / 1024

    # One untimed warm-up call (thread pool, allocator, kernels), on one 512-token text: a warm-up per length
    # would cost a long text's time at each long length.
    emb.encode(exact_length_texts(emb.tokenizer, 1, min(512, lengths[0]), seed=1), batch_size=1)
    results = []
    for length in lengths:
        texts = exact_length_texts(emb.tokenizer, args.texts_per_length, length, seed=length)
        ids = emb.tokenizer(texts, truncation=True, max_length=length)["input_ids"]
        assert all(len(x) == length for x in ids), "exact_length_texts: wrong token count"
        todo = configs + (mcls_configs if length >= args.mcls_from else [])
        best: dict[int, tuple[float, float, float]] = {}
        load_before = os.getloadavg()
        for _ in range(repeats):
            for i, c in enumerate(todo):
                r = run(texts, length, c[1], c[2], c[3])
                if i not in best or r[0] < best[i][0]:
                    best[i] = r
        for i, (label, batch_size, outputs, mcls) in enumerate(todo):
            seconds, rss, above = best[i]
            model_lengths = (
                [len(insert_cls(x, cls_id, stride, emb.model.max_tokens)[0]) for x in ids]
                if mcls
                else [length] * len(ids)
            )
            flops = forward_flops(model_lengths, cfg, colbert_dim, outputs)
            per_batch = min(len(texts), max(1, min(batch_size, budget // max(model_lengths))))  # formed
            results.append(
                {
                    "length": length,
                    "batching": label,
                    "texts_per_batch": per_batch,
                    "outputs": outputs,
                    "mcls": mcls,
                    "texts": len(texts),
                    "model_tokens": sum(model_lengths),
                    "seconds": seconds,
                    "tokens_per_s": sum(model_lengths) / seconds,
                    "flops": flops,
                    "peak_rss_mib": rss,
                    "call_rss_mib": above,
                    "load_before": load_before,
                }
            )
        print(
            f"  {length} tokens done ({sum(best[i][0] for i in best):.0f} s timed), load {_fmt_load(os.getloadavg())}",
            file=sys.stderr,
            flush=True,
        )
    peak = max(peak_start, matmul_peak_flops())
    load = {"start": load_start, "end": os.getloadavg()}
    env = env_summary(threads)
    rows = []
    for r in results:
        gflops = r["flops"] / r["seconds"] / 1e9
        rows.append(
            [
                r["length"],
                ("MCLS " if r["mcls"] else "")
                + ("dense" if r["outputs"] == "dense" else "dense+sparse+colbert"),
                f"{r['batching']} ({r['texts_per_batch']}/batch)",
                r["texts"],
                r["model_tokens"],
                f"{r['seconds']:.2f}",
                f"{r['tokens_per_s']:.0f}",
                f"{gflops:.1f}",
                f"{100 * gflops * 1e9 / peak:.0f}%",
                f"{r['peak_rss_mib']:.0f}",
                f"+{r['call_rss_mib']:.0f}",
            ]
        )
    print(
        f"\nencode tokens/s by length: {args.model} (hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
        f"{emb.model.max_tokens} positions, attention {cfg._attn_implementation}), ours-torch fp32 on CPU "
        f"'{env['cpu']}', torch {env['torch']}, {threads} intra-op threads, best of {repeats}; "
        f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (2048^3 torch.mm, same run); MCLS stride {stride}; "
        f"load average (1 / 5 / 15 min) {_fmt_load(load['start'])} at the start, {_fmt_load(load['end'])} at the end"
    )
    print_table(
        [
            "tokens",
            "outputs",
            "batching",
            "texts",
            "model tokens",
            "s",
            "tokens/s",
            "model GFLOP/s",
            "of peak",
            "peak RSS MiB",
            "call MiB",
        ],
        rows,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "env": env,
                    "model": str(args.model),
                    "peak_flops": peak,
                    "load": load,
                    "by_length": results,
                },
                indent=2,
            )
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 128 short, 12 long, 64 mixed texts, best of 1"
    )
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every side")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="best of N, all sides taking turns (default 2, --quick 1; --by-length 1)",
    )
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--n-short", type=int, default=None, help="short texts (default 3000, --quick 128)")
    parser.add_argument("--n-long", type=int, default=None, help="long texts (default 200, --quick 12)")
    parser.add_argument(
        "--n-mixed", type=int, default=None, help="mixed corpus texts (default 3000, --quick 64)"
    )
    parser.add_argument(
        "--budgets",
        default="",
        help="extra runs of ours-torch with these max_batch_tokens values (comma list), all three outputs",
    )
    parser.add_argument("--no-reference", action="store_true", help="ours only (no FlagEmbedding venv)")
    parser.add_argument("--no-onnx", action="store_true", help="no ONNX sides (no export)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--by-length",
        action="store_true",
        help="run only the by-length part: ours-torch tokens/s on texts of exact token lengths (needs --model)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="--by-length: the model directory (positions >= the longest length)",
    )
    parser.add_argument(
        "--lengths",
        default="512,1024,2048,4096,8192",
        help="--by-length: text lengths in tokens (comma list)",
    )
    parser.add_argument("--texts-per-length", type=int, default=4, help="--by-length: texts per length")
    parser.add_argument(
        "--mcls-from", type=int, default=2048, help="--by-length: also the MCLS path (dense) from this length"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.update(OFFLINE_ENV)
    if args.by_length:
        if args.model is None:
            parser.error("--by-length needs --model DIR")
        return by_length(args)
    if args.model is not None:
        parser.error("--model is for --by-length")
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not names or set(names) - set(CASES):
        parser.error(f"--cases: expected a comma list of {', '.join(CASES)}, got {args.cases!r}")
    n_short = args.n_short or (128 if args.quick else 3000)
    n_long = args.n_long or (12 if args.quick else 200)
    n_mixed = args.n_mixed or (64 if args.quick else 3000)
    repeats = args.repeats or (1 if args.quick else 2)
    if not args.no_reference and not reference_ready():
        print(
            f"no FlagEmbedding venv at {VENV}: run conformance_flagembedding.py --setup-only", file=sys.stderr
        )
        return 2

    threads = pin_threads(args.threads)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    model_dir = prepare_model(BENCH_DIR)
    onnx_dir = None if args.no_onnx else prepare_onnx(model_dir)
    load_start = os.getloadavg()
    peak_start = matmul_peak_flops()

    from m3core.embedder import M3Embedder

    emb = M3Embedder(model_dir, use_fp16=False, device="cpu", show_progress=False)
    cfg = emb.model.backbone.config
    colbert_dim = emb.model.colbert_head.dim
    onnx = {}  # side → an embedder on that graph of the export, onnxruntime pinned to the same threads
    if onnx_dir is not None:
        for side, variant in ONNX_SIDES.items():
            onnx[side] = M3Embedder(
                onnx_dir, backend="onnx", onnx_variant=variant, threads=threads, show_progress=False
            )
    corpora = {
        "short": lambda: make_texts(n_short, (1, 2), seed=11),
        "long": lambda: make_texts(n_long, (28, 36), seed=13),
        "mixed": lambda: mixed_texts(n_mixed, seed=17),
    }
    cases = []
    for name in names:
        texts, max_length = corpora[name](), 512
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

    server = None if args.no_reference else ReferenceServer(model_dir, threads, BENCH_DIR / "reference.log")
    default_budget = emb.max_batch_tokens
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]

    def ours_with(embedder, budget: int):
        def run(case: dict, warmup: bool) -> float:
            embedder.max_batch_tokens = budget
            return time_ours(embedder, case, warmup)

        return run

    # Every side of a case runs once per round, in turn (reference, ours-torch, ours-onnx-fp32, ours-onnx-int8,
    # ours-torch with other token budgets), so a burst of load from other processes on this shared machine hits
    # all alike; best of `repeats` rounds. Never concurrent: the reference waits on its pipe while ours runs.
    seconds: dict[tuple[str, str, str], float] = {}
    for c in cases:
        sides = [(TORCH, ours_with(emb, default_budget))]
        if server is not None:
            sides.insert(0, (REFERENCE, server.time))
        sides += [(side, ours_with(e, default_budget)) for side, e in onnx.items()]
        if c["outputs"] == "all":
            sides += [(f"{TORCH}, max_batch_tokens={b}", ours_with(emb, b)) for b in budgets]
        for r in range(repeats):
            for side, run in sides:
                key = (c["name"], c["outputs"], side)
                seconds[key] = min(seconds.get(key, float("inf")), run(c, r == 0))
    emb.max_batch_tokens = default_budget
    if server is not None:
        server.close()
    peak = max(peak_start, matmul_peak_flops())

    rows, figures = [], []

    def add(case: dict, side: str, seconds: float, ref: float | None, torch_s: float | None) -> None:
        tokens = sum(case["lengths"])
        flops = forward_flops(case["lengths"], cfg, colbert_dim, case["outputs"]) / seconds
        vs_ref = ref / seconds if ref and side != REFERENCE else None
        vs_torch = torch_s / seconds if torch_s and side.startswith("ours-onnx") else None
        goal = ""
        if side in GOALS and vs_ref is not None:
            goal = f"≥ {GOALS[side]:g}x: {'yes' if vs_ref >= GOALS[side] else 'NO'}"
        lengths = case["lengths"]
        rows.append(
            [
                f"{case['name']} ({len(lengths)} texts, {min(lengths)}-{max(lengths)} tok, "
                f"{tokens / len(lengths):.0f} avg)",
                "dense" if case["outputs"] == "dense" else "dense+sparse+colbert",
                side,
                f"{seconds:.2f}",
                f"{len(lengths) / seconds:.1f}",
                f"{tokens / seconds:.0f}",
                f"{flops / 1e9:.1f}",
                f"{100 * flops / peak:.0f}%",
                f"{vs_ref:.2f}x" if vs_ref else "",
                f"{vs_torch:.2f}x" if vs_torch else "",
                goal,
            ]
        )
        figures.append(
            {
                "case": case["name"],
                "outputs": case["outputs"],
                "side": side,
                "seconds": seconds,
                "texts": len(lengths),
                "tokens": tokens,
                "flops": flops * seconds,
                "vs_reference": vs_ref,
                "vs_torch": vs_torch,
            }
        )

    for c in cases:
        ref = seconds.get((c["name"], c["outputs"], REFERENCE))
        torch_s = seconds.get((c["name"], c["outputs"], TORCH))
        for (name, outputs, side), t in seconds.items():
            if (name, outputs) == (c["name"], c["outputs"]):
                add(c, side, t, ref, torch_s)

    env = env_summary(threads)
    load = {"start": load_start, "end": os.getloadavg()}
    print(
        f"\nencode throughput: {Path(model_dir).name} (hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers), "
        f"CPU '{env['cpu']}', torch {env['torch']}, {threads} intra-op threads pinned on every side, "
        f"best of {repeats}, alternating; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (2048^3 torch.mm, same run); "
        f"ours default max_batch_tokens={M3Embedder.__init__.__kwdefaults__['max_batch_tokens']}; "
        f"load average (1 / 5 / 15 min) {'/'.join(f'{x:.1f}' for x in load['start'])} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in load['end'])} at the end"
    )
    if onnx_dir is not None:
        import onnxruntime

        print(f"ONNX: {onnx_dir} (onnxruntime {onnxruntime.__version__}, CPU provider)")
    print_table(
        [
            "inputs",
            "outputs",
            "side",
            "s",
            "texts/s",
            "tokens/s",
            "model GFLOP/s",
            "of peak",
            "vs FlagEmb.",
            "vs torch",
            "goal",
        ],
        rows,
    )
    if args.json:
        args.json.write_text(
            json.dumps({"env": env, "peak_flops": peak, "load": load, "figures": figures}, indent=2)
        )
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"\n(bench took {time.perf_counter() - t0:.0f} s)")
    sys.exit(code)
