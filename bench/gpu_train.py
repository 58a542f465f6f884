"""Training steps of a BGE-M3-sized model at 8192 tokens, whole batch vs split-batch: the prepared GPU check.

    .venv/bin/python bench/gpu_train.py [--precision bf16|fp16|fp32] [--seq-len 8192] [--batch-size 1]
        [--group-size 2] [--steps 3] [--peak-tflops 989] [--threads N] [--workdir DIR] [--tiny]

A random-init XLM-R model of BGE-M3's shape (24 layers, hidden 1024, 16 heads, FFN 4096, 250002 vocabulary,
8194 positions; `--tiny`: 2 layers, hidden 64, 4 heads, 1000 vocabulary, 514 positions, 512 tokens, for a CPU
run that shows the script works) is built in `--workdir` by `m3core.builder.build_tiny_model` (its tokenizer only
has to make the directory loadable). A JSONL file of FlagEmbedding lines whose passages are longer than
`--seq-len` tokens (repeated sentences, truncated by the Trainer to exactly `--seq-len`) and whose queries fill
the 64-token query length is written next to it. The real `m3core.train.Trainer` then takes optimizer steps
(`train_step`: tokenization, all three modes, M3Loss with self-distillation, backward, gradient clipping, AdamW;
bf16 autocast, or fp16 with the Trainer's GradScaler) on batches of `--batch-size` queries with `--group-size`
passages each, formed by its length-bucket sampler (one bucket, budget of exactly one batch). Two cases in the
same run: (a) the whole batch in one forward; (b) split-batch, `sub_batch_size=1` with activation checkpointing.

Per case, after one warm-up step (kernels, allocator, AdamW state; profiled to find the SDPA kernel in use) that
is not timed: peak memory (CUDA: `torch.cuda.max_memory_allocated` over the timed steps, model and optimizer
included; CPU: the process's peak RSS since the timed steps began, VmHWM, or `getrusage` where VmHWM cannot be
reset), the median step time of `--steps` steps, tokens/s (real query + passage tokens) and MFU = model FLOPs
per step / step time / peak FLOP/s. Model FLOPs: 3 × the forward's (backward = 2 × forward), counted as
`bench/encode.py` counts them (`_common.forward_flops`: projections, feed-forward, attention's n² terms, the
heads); checkpointing's recomputed forward is not counted (that is MFU, not hardware utilisation). `--peak-tflops` is the device's dense
peak (default on CUDA 989, an H200's bf16/fp16 figure: give the fp32 one with `--precision fp32`); on a CPU MFU
is printed only when it is given. A case that runs out of CUDA memory is printed as OOM, its memory is freed and
the next case still runs. Ratios: (b)'s tokens/s and peak memory over (a)'s, from the same run. Without CUDA
the full-size model is refused above 512 tokens (a CPU-only torch would spend hours per step).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    ALL_SENTENCES,
    env_summary,
    forward_flops,
    pin_threads,
    print_table,
    proc_status_kib,
    reset_peak_rss,
)

BGE_M3 = {
    "num_layers": 24,
    "hidden_size": 1024,
    "num_heads": 16,
    "intermediate_size": 4096,
    "max_tokens": 8192,
}
BGE_M3_VOCAB = 250002
TINY = {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "intermediate_size": 256, "max_tokens": 512}
TINY_VOCAB = 1000
QUERY_TOKENS = 64  # query_max_length; every query is longer, so each one is exactly this long
PEAK_LABELS = {
    "cuda": "torch.cuda.max_memory_allocated over the timed steps",
    "vmhwm": "process peak RSS (VmHWM) over the timed steps",
    "rusage": "process peak RSS since start (getrusage ru_maxrss)",
}


# ---------------------------------------------------------------------------------------------- model and data
def build_model(out: Path, tiny: bool) -> Path:
    """A random-init model directory of the chosen shape (reused when it is already there)."""
    from m3core.builder import TinyModelSpec, build_tiny_model

    if (out / "m3_config.json").exists():
        return out
    shape, vocab = (TINY, TINY_VOCAB) if tiny else (BGE_M3, BGE_M3_VOCAB)
    # The tokenizer is trained on a few sentences (its size does not matter: the bench feeds repeated words);
    # the embedding matrix is then grown to the full vocabulary so parameters, optimizer state and memory match.
    spec = TinyModelSpec(vocab_size=min(vocab, 2000), initializer_range=0.02, **shape)
    model = build_tiny_model(None, ALL_SENTENCES * 20, spec)
    if vocab > model.backbone.config.vocab_size:
        model.backbone.resize_token_embeddings(vocab, mean_resizing=False)
    model.save_pretrained(out)
    return out


def write_data(path: Path, model_dir: Path, n: int, seq_len: int, group_size: int) -> Path:
    """`n` FlagEmbedding lines, `group_size - 1` negatives each; every query and passage is longer than its
    maximum length (checked), so the Trainer truncates each to exactly it."""
    from transformers import AutoTokenizer

    words = " ".join(ALL_SENTENCES)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.model_max_length = 10**9  # counting tokens only: no "longer than the maximum" warning
    per_copy = len(tokenizer(words, add_special_tokens=False)["input_ids"])
    passage = " ".join([words] * (seq_len // per_copy + 2))
    for text, need in ((passage, seq_len), (words, QUERY_TOKENS)):
        have = len(tokenizer(text)["input_ids"])
        if have < need:
            raise RuntimeError(f"a generated text has {have} tokens, fewer than the {need} it must reach")
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            line = {
                "query": f"{i} {words}",
                "pos": [f"{i} {passage}"],
                "neg": [f"{i} {j} {passage}" for j in range(max(group_size - 1, 1))],
            }
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def parameter_counts(model) -> tuple[int, int]:
    """(all parameters, non-embedding ones: everything but the backbone's embedding tables and their norm)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for n, p in model.backbone.named_parameters() if n.startswith("embeddings."))
    return total, total - embedding


def model_flops(model, queries: int, group: int, seq_len: int, query_len: float) -> float:
    """Model FLOPs of one training step: 3 × the forward's (`_common.forward_flops`, all outputs; the backward
    costs twice the forward), without checkpointing's recompute."""
    lengths = [query_len] * queries + [seq_len] * (queries * group)
    return 3 * forward_flops(lengths, model.backbone.config, model.colbert_head.dim, "all")


# ---------------------------------------------------------------------------------------------- measuring
def reset_peak(cuda: bool) -> str:
    """Start a peak-memory window; returns how its peak is read (a `PEAK_LABELS` key)."""
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return "cuda"
    try:
        reset_peak_rss()
        return "vmhwm"
    except OSError:  # not Linux >= 4.0, or /proc/self/clear_refs not writable: the lifetime peak it is
        return "rusage"


def peak_gib(kind: str) -> float:
    import torch

    if kind == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    if kind == "vmhwm":
        return proc_status_kib("VmHWM") / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def sdpa_kernels(prof) -> str:
    """The attention kernels a profiled step ran (forward ops; e.g. `efficient_attention`, `attention_math`)."""
    prefixes = ("aten::_scaled_dot_product_", "aten::_flash_attention", "aten::_efficient_attention")
    names = {
        e.key.removeprefix("aten::_scaled_dot_product_").removeprefix("aten::_")
        for e in prof.key_averages()
        if e.key.startswith(prefixes) and not e.key.endswith("_backward")
    }
    return ", ".join(sorted(names)) or "none"


def run_case(args, model_dir: Path, data: Path, out: Path, split: bool) -> dict:
    """Warm-up step, then `args.steps` timed `Trainer.train_step` calls; a dict of what the table shows."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from m3core.train import TrainConfig
    from m3core.train.trainer import Trainer

    cuda = torch.cuda.is_available()
    per_query = args.group_size * args.seq_len + QUERY_TOKENS
    cfg = TrainConfig(
        model=str(model_dir),
        output_dir=str(out),
        train_data=[str(data)],
        group_size=args.group_size,
        query_max_length=QUERY_TOKENS,
        passage_max_length=args.seq_len,
        sampler="length_bucket",
        bucket_edges=[0, args.seq_len],  # one bucket; its budget holds exactly --batch-size queries
        tokens_per_batch=args.batch_size * per_query,
        max_batch_size=args.batch_size,
        sub_batch_size=1 if split else None,
        activation_checkpointing=split,
        drop_last=True,
        max_steps=args.steps + 1,
        bf16="on" if args.precision == "bf16" else "off",
        fp16=args.precision == "fp16",
        show_progress=False,
    )
    row: dict = {"case": "split-batch" if split else "whole batch", "sub_batch": 1 if split else "-"}
    trainer = None
    try:
        trainer = Trainer(cfg)
        row["params"] = parameter_counts(trainer.model)
        row["attn_implementation"] = trainer.model.backbone.config._attn_implementation
        batches = trainer._batches()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.train_step([next(batches)])  # warm-up: kernels, allocator, AdamW state
        row["sdpa_kernels"] = sdpa_kernels(prof)
        row["peak_kind"] = reset_peak(cuda)
        times, metrics = [], {}
        for _ in range(args.steps):
            batch = next(batches)
            start = time.perf_counter()
            metrics = trainer.train_step([batch])
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        queries = len(batch)
        step = statistics.median(times)
        # Real tokens of the last step (no padding: every text is cut to its maximum length)
        query_len = (metrics["tokens"] - queries * args.group_size * args.seq_len) / queries
        flops = model_flops(trainer.model, queries, args.group_size, args.seq_len, query_len)
        row |= {
            "queries": queries,
            "peak_gib": peak_gib(row["peak_kind"]),
            "step_s": step,
            "tokens_s": metrics["tokens"] / step,
            "padding": 1 - metrics["tokens"] / metrics["padded_tokens"],
            "loss": metrics["loss"],
            "mfu": flops / step / (args.peak_tflops * 1e12) if args.peak_tflops else None,
        }
    except torch.cuda.OutOfMemoryError:
        row |= {"queries": args.batch_size, "oom": True}
    finally:
        del trainer
        gc.collect()  # the model, its gradients and AdamW state may sit in reference cycles
        if cuda:
            torch.cuda.empty_cache()
    if row.get("oom") and cuda:
        row["left_gib"] = torch.cuda.memory_allocated() / 2**30
    return row


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model at 512 tokens (a CPU check)")
    ap.add_argument(
        "--precision", choices=("bf16", "fp16", "fp32"), default=None, help="default: bf16 on CUDA, else fp32"
    )
    ap.add_argument("--seq-len", type=int, default=None, help="passage tokens (default 8192; --tiny 512)")
    ap.add_argument("--batch-size", type=int, default=1, help="queries per step (default 1)")
    ap.add_argument("--group-size", type=int, default=2, help="passages per query (default 2)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps, after one warm-up step (default 3)")
    ap.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak TFLOP/s for MFU (default 989 on CUDA)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the model and data here (built once)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cuda = torch.cuda.is_available()
    args.precision = args.precision or ("bf16" if cuda else "fp32")
    limit = (TINY if args.tiny else BGE_M3)["max_tokens"]
    args.seq_len = args.seq_len or limit
    if not 1 <= args.seq_len <= limit:
        ap.error(f"--seq-len {args.seq_len}: must be between 1 and the model's {limit} tokens")
    if min(args.batch_size, args.group_size, args.steps) < 1:
        ap.error("--batch-size, --group-size and --steps must be at least 1")
    if not cuda and not args.tiny and args.seq_len > 512:
        # e.g. a CPU-only torch on the GPU machine: hours per step and >100 GB of attention maps, not a bench
        ap.error(
            f"no CUDA device (torch {torch.__version__}): a BGE-M3-sized step at {args.seq_len} tokens is "
            "too slow on a CPU; use --tiny, or --seq-len 512 or less"
        )
    if args.peak_tflops is None and cuda:
        args.peak_tflops = 989.0
    threads = pin_threads(args.threads or torch.get_num_threads())
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-train-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return measure(args, work, threads, cuda)
    finally:
        if args.workdir is None:  # a BGE-M3-sized model is 2.3 GB: keep it only where asked to
            shutil.rmtree(work, ignore_errors=True)


def measure(args, work: Path, threads: int, cuda: bool) -> int:
    import torch

    print(json.dumps(env_summary(threads)))
    device = f"cuda ({torch.cuda.get_device_name()}, CUDA {torch.version.cuda})" if cuda else "cpu"
    peak = f"--peak-tflops {args.peak_tflops:g}" if args.peak_tflops else "no --peak-tflops: MFU n/a"
    print(f"device {device}; torch {torch.__version__}; precision {args.precision}; {peak}", flush=True)
    start = time.perf_counter()
    model_dir = build_model(work / ("model-tiny" if args.tiny else "model-bge-m3"), args.tiny)
    n_lines = args.batch_size * (args.steps + 1)
    data = write_data(work / "train.jsonl", model_dir, n_lines, args.seq_len, args.group_size)
    print(f"model and data ready in {time.perf_counter() - start:.0f} s ({work})", flush=True)

    rows = []
    for split in (False, True):
        start = time.perf_counter()
        r = run_case(args, model_dir, data, work / f"out-{'split' if split else 'whole'}", split)
        rows.append(r)
        what = "OOM" if r.get("oom") else f"step {r['step_s']:.3f} s, peak {r['peak_gib']:.2f} GiB"
        print(f"  {r['case']}: {what} ({time.perf_counter() - start:.0f} s with set-up)", flush=True)

    done = next((r for r in rows if "params" in r), None)
    if done:
        total, dense = done["params"]
        print(
            f"parameters {total / 1e6:.1f} M ({dense / 1e6:.1f} M non-embedding); attention "
            f"attn_implementation={done['attn_implementation']}, SDPA kernels run: "
            + "; ".join(f"{r['case']}: {r['sdpa_kernels']}" for r in rows if "sdpa_kernels" in r)
        )
    kinds = sorted({r["peak_kind"] for r in rows if "peak_kind" in r})
    print(
        f"seq len {args.seq_len}, query len {QUERY_TOKENS}; {args.steps} timed steps after 1 warm-up, median; "
        f"peak memory: {', '.join(PEAK_LABELS[k] for k in kinds) or '-'}"
    )
    whole = rows[0]
    table = []
    for r in rows:
        head = [r["case"], args.precision, args.seq_len, r["queries"], args.group_size, r["sub_batch"]]
        if r.get("oom"):
            left = f" ({r['left_gib']:.2f} GiB left allocated after freeing)" if "left_gib" in r else ""
            table.append([*head, "OOM", "-", "-", "-", "-", "-", "-"])
            print(f"{r['case']}: out of CUDA memory{left}")
            continue
        ok = not whole.get("oom")
        table.append([
            *head, f"{r['peak_gib']:.2f}", f"{r['step_s']:.3f}", f"{r['tokens_s']:.0f}",
            "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%", f"{r['loss']:.3f}",
            f"{r['tokens_s'] / whole['tokens_s']:.2f}" if ok else "-",
            f"{r['peak_gib'] / whole['peak_gib']:.2f}" if ok else "-",
        ])  # fmt: skip
    print_table(
        ["case", "precision", "seq", "queries", "group", "sub_batch", "peak GiB", "step s", "tokens/s", "MFU",
         "loss", "tok/s vs (a)", "mem vs (a)"],
        table,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
