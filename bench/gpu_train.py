"""Training steps of a BGE-M3-sized model at 8192 tokens, whole batch vs split-batch: the prepared GPU check.

    .venv/bin/python bench/gpu_train.py [--precision bf16|fp16|fp32] [--seq-len 8192] [--batch-size 1]
        [--group-size 2] [--steps 3] [--peak-tflops 989] [--threads N] [--workdir DIR] [--tiny]

A random-init XLM-R model of BGE-M3's shape (24 layers, hidden 1024, 16 heads, FFN 4096, 250002 vocabulary,
8194 positions; `--tiny`: 2 layers, hidden 64, 1000 vocabulary, 512 tokens, for a CPU run that shows the script
works) is built in `--workdir`, and the real `m3core.train.Trainer` takes optimizer steps (`train_step`: all three
modes, M3Loss with self-distillation, backward, AdamW; bf16 autocast, or fp16 with its loss scaler) on batches of
`--batch-size` queries with `--group-size` passages of exactly `--seq-len` tokens each. Two cases in the same
run: (a) the whole batch in one forward; (b) split-batch, `sub_batch_size=1` with activation checkpointing.

Printed per case: peak memory (CUDA: `torch.cuda.max_memory_allocated` over the timed steps; CPU: the process's
peak RSS since the timed steps began, VmHWM), the median step time, tokens/s (query + passage tokens, all
positions: every passage is exactly `--seq-len` long) and MFU = model FLOPs per step / step time / peak FLOP/s.
Model FLOPs: 6 × non-embedding parameters × tokens (forward + backward) plus attention, 12 × layers × hidden ×
seq² per sequence (QKᵀ and AV, forward and backward); checkpointing's recomputed forward is not counted (that is
MFU, not hardware utilisation). `--peak-tflops` is the device's dense peak (989 for an H200 in bf16/fp16; give
the fp32 figure with `--precision fp32`); on a CPU MFU is printed only when it is given. A case that runs out of
CUDA memory is printed as OOM and the next case still runs. Ratios: (b) against (a) of the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ALL_SENTENCES, env_summary, pin_threads, print_table, proc_status_kib, reset_peak_rss

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
QUERY_TOKENS = 64


def build_model(out: Path, tiny: bool) -> Path:
    """A random-init model directory of the chosen shape (reused when it is already there)."""
    import torch

    from m3core.builder import TinyModelSpec, build_tiny_model

    if (out / "m3_config.json").exists():
        return out
    shape, vocab = (TINY, TINY_VOCAB) if tiny else (BGE_M3, BGE_M3_VOCAB)
    # The tokenizer is trained on a few sentences (its size does not matter: the bench feeds repeated words);
    # the embedding matrix is then grown to BGE-M3's vocabulary so parameters, optimizer state and memory match.
    spec = TinyModelSpec(vocab_size=min(vocab, 2000), initializer_range=0.02, **shape)
    model = build_tiny_model(None, ALL_SENTENCES * 20, spec)
    if vocab > len(model.tokenizer):
        with torch.no_grad():
            model.backbone.resize_token_embeddings(vocab)
    model.save_pretrained(out)
    return out


def write_data(path: Path, model_dir: Path, n: int, seq_len: int) -> Path:
    """`n` FlagEmbedding lines whose passages are just over `seq_len` tokens (truncated to exactly it): no longer,
    so that tokenizing them does not count as training time."""
    from transformers import AutoTokenizer

    words = " ".join(ALL_SENTENCES)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.model_max_length = 10**9  # counting tokens only: no "longer than the maximum" warning
    per_copy = len(tokenizer(words, add_special_tokens=False)["input_ids"])
    passage = " ".join([words] * (seq_len // per_copy + 2))
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            line = {"query": f"{i} {ALL_SENTENCES[i % len(ALL_SENTENCES)]}", "pos": [f"{i} {passage}"]}
            line["neg"] = [f"{i} {j} {passage}" for j in range(15)]
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def model_flops(model, batch: int, group: int, seq_len: int, query_len: int) -> float:
    """Model FLOPs of one training step (forward + backward) without checkpointing's recompute."""
    cfg = model.backbone.config
    embedding = sum(p.numel() for n, p in model.backbone.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    seqs = [(batch, query_len), (batch * group, seq_len)]
    tokens = sum(n * length for n, length in seqs)
    attention = sum(n * 12 * cfg.num_hidden_layers * cfg.hidden_size * length**2 for n, length in seqs)
    return 6 * dense * tokens + attention


def run_case(args, model_dir: Path, data: Path, out: Path, sub_batch: int | None) -> dict:
    import torch

    from m3core.train import TrainConfig
    from m3core.train.trainer import Trainer

    cuda = torch.cuda.is_available()
    cfg = TrainConfig(
        model=str(model_dir), output_dir=str(out), train_data=[str(data)], group_size=args.group_size,
        query_max_length=QUERY_TOKENS, passage_max_length=args.seq_len, bucket_edges=[0, args.seq_len],
        tokens_per_batch=args.batch_size * (args.group_size * args.seq_len + QUERY_TOKENS),
        max_batch_size=args.batch_size,
        sub_batch_size=sub_batch, drop_last=True, max_steps=args.steps + 1, show_progress=False, report_to=[],
        bf16="on" if args.precision == "bf16" else "off", fp16=args.precision == "fp16", self_distill_start_step=0,
    )  # fmt: skip
    row = {"case": "split-batch" if sub_batch else "whole batch", "sub_batch_size": sub_batch or "-"}
    trainer = None
    try:
        trainer = Trainer(cfg)
        row["attention"] = trainer.model.backbone.config._attn_implementation
        batches = trainer._batches()
        trainer.train_step([next(batches)])  # warm-up: kernels, allocator, optimizer state
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak_rss()
        times = []
        for _ in range(args.steps):
            batch = next(batches)
            t0 = time.perf_counter()
            trainer.train_step([batch])
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        n_queries = len(batch)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else proc_status_kib("VmHWM") / 2**20
        step = statistics.median(times)
        flops = model_flops(trainer.model, n_queries, args.group_size, args.seq_len, QUERY_TOKENS)
        tokens = n_queries * (QUERY_TOKENS + args.group_size * args.seq_len)
        row |= {"queries": n_queries, "peak_gib": peak, "step_s": step, "tokens_s": tokens / step}
        row["mfu"] = flops / step / (args.peak_tflops * 1e12) if args.peak_tflops else None
    except torch.cuda.OutOfMemoryError:
        row |= {"queries": args.batch_size, "oom": True}
    finally:
        del trainer
        if cuda:
            torch.cuda.empty_cache()
    return row


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tiny", action="store_true", help="a 2-layer model at 512 tokens (a CPU check of the script)"
    )
    ap.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default=None)
    ap.add_argument("--seq-len", type=int, default=None, help="passage tokens (default 8192; --tiny 512)")
    ap.add_argument("--batch-size", type=int, default=1, help="queries per step")
    ap.add_argument("--group-size", type=int, default=2, help="passages per query")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak (default 989 on CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the model here (built once)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cuda = torch.cuda.is_available()
    args.precision = args.precision or ("bf16" if cuda and not args.tiny else "fp32")
    args.seq_len = args.seq_len or (TINY["max_tokens"] if args.tiny else BGE_M3["max_tokens"])
    if args.peak_tflops is None and cuda:
        args.peak_tflops = 989.0
    limit = (TINY if args.tiny else BGE_M3)["max_tokens"]
    if not 1 <= args.seq_len <= limit:
        ap.error(f"--seq-len {args.seq_len}: must be between 1 and the model's {limit} positions")
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

    t0 = time.perf_counter()
    model_dir = build_model(work / ("model-tiny" if args.tiny else "model-bge-m3"), args.tiny)
    data = write_data(work / "train.jsonl", model_dir, 4 * args.batch_size * (args.steps + 2), args.seq_len)
    print(json.dumps(env_summary(threads)))
    device = torch.cuda.get_device_name() if cuda else "cpu"
    print(
        f"device {device}; precision {args.precision}; model built in "
        f"{time.perf_counter() - t0:.0f} s ({model_dir}); peak memory: "
        f"{'torch.cuda.max_memory_allocated' if cuda else 'process peak RSS (VmHWM)'}"
    )
    rows = [run_case(args, model_dir, data, work / f"out-{sub}", sub) for sub in (None, 1)]
    from m3core.model import M3Model

    n_params = sum(p.numel() for p in M3Model.from_pretrained(str(model_dir)).parameters())
    print(
        f"parameters {n_params / 1e6:.1f} M; seq len {args.seq_len}; group size {args.group_size}; "
        f"query tokens {QUERY_TOKENS}; {args.steps} timed steps (median); attention "
        f"{rows[0].get('attention')}"
    )
    whole = rows[0]
    table = []
    for r in rows:
        if r.get("oom"):
            table.append(
                [r["case"], args.precision, args.seq_len, r["queries"], r["sub_batch_size"], "OOM"]
                + ["-"] * 5
            )
            continue
        ok = not whole.get("oom")
        table.append([
            r["case"], args.precision, args.seq_len, r["queries"], r["sub_batch_size"], f"{r['peak_gib']:.2f}",
            f"{r['step_s']:.3f}", f"{r['tokens_s']:.0f}", "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
            f"{r['tokens_s'] / whole['tokens_s']:.2f}" if ok else "-", f"{r['peak_gib'] / whole['peak_gib']:.2f}" if ok else "-",
        ])  # fmt: skip
    print_table(
        ["case", "precision", "seq", "queries", "sub_batch", "peak GiB", "step s", "tokens/s", "MFU",
         "tok/s vs whole", "mem vs whole"],
        table,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
