"""Training throughput and memory: length-bucketed vs random batches, split-batch vs whole batches at a long length.

    .venv/bin/python bench/train.py [--quick] [--threads 1] [--length 1024] [--cap-mib N] [--json FILE]

Both parts drive the real `m3core.train.Trainer` (`train_step`: tokenization, all three modes, M3Loss with
self-distillation, backward, AdamW) on a small random XLM-R-shaped model (hidden 128, 2 layers, 4 heads, attention
dropout 0.1 as in XLM-R, 8192 positions, tokenizer trained on generated text), built in a temporary directory.

1. Throughput on length-skewed data (80% of examples short, 30-60 tokens; 20% long, 400-1000 tokens; group size 2).
   Both samplers get the same token budget (`tokens_per_batch` padded passage tokens per step, i.e. the same
   activation memory): the bucketed sampler sizes each bucket's batch as budget / (group × bucket's upper edge);
   the random sampler must use the one batch size at which its worst batch — one holding the longest example —
   still fits, budget / (group × longest length). Any larger random batch would overflow the budget whenever it
   draws a long example; that is the fair baseline. Figures: real (non-padding) query + passage tokens per second
   over one epoch of the same examples, and the padding fraction. The two trainers alternate steps (whichever
   is behind in its epoch goes next) so load changes on a shared machine hit both alike.
2. Largest batch at a long length (every passage exactly `--length` tokens) under one memory cap, with and
   without split-batch (`sub_batch_size=1` + activation checkpointing). Each trial is a fresh child process that
   builds the Trainer, takes a warm-up step on a short example, resets its peak RSS, runs one training step at the
   batch size and reports its peak RSS above the RSS before the step. The cap defaults to 1.5 × the peak of a
   whole batch of 1 (so that side fits exactly 1); the search is in `largest_batch`. Also each side's step time.

With CUDA available it also runs one bf16 training step per side at fixed batches (`CUDA_RUNS`) and prints the
peak CUDA memory (`torch.cuda.max_memory_allocated` above what the model and optimizer held before the step) and
the step time. Part 2 stays on the CPU there (its trials hide the GPU), so its figures compare across machines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    ForkedRunner,
    env_summary,
    pin_threads,
    print_table,
    proc_status_kib,
    reset_peak_rss,
)

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
MODEL_SHAPE = {
    "hidden_size": 128,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 512,
    "vocab_size": 2000,
}
GROUP_SIZE = 2
SHORT, LONG = (30, 60), (400, 1000)
# Part 1's bucket edges; the last is LONG's upper length, the random side's padded worst case.
EDGES = [0, 64, 128, 256, 512, 1024]
# GPU part: (passage tokens, examples) per bf16 step.
CUDA_RUNS = ((4096, 8), (8192, 4))


# ---------------------------------------------------------------------------------------------- data and model
def _textgen():
    sys.path.insert(0, str(ROOT / "tests"))
    import textgen

    return textgen


def build_model(out_dir: Path, max_tokens: int) -> Path:
    """The small benchmark model (random weights; a Unigram tokenizer trained on generated multilingual text)."""
    from m3core import build_tiny_model

    return build_tiny_model(out_dir, _textgen().sentences(2000), max_tokens=max_tokens, **MODEL_SHAPE)


class TextMaker:
    """Generated text cut to an exact token count (special tokens included) under the model's tokenizer."""

    def __init__(self, tokenizer, seed: int):
        self.tok, self.rng, self.textgen = tokenizer, random.Random(seed), _textgen()
        self.langs = list(self.textgen.WORDS)

    def text(self, n_tokens: int) -> str:
        lang = self.rng.choice(self.langs)
        seed = self.rng.randrange(1 << 30)
        body = n_tokens - 2  # <s> ... </s>
        words = n_tokens // 2  # this tokenizer splits a generated word into ~2.5-4 pieces
        while True:
            text = self.textgen.long_text(words, seed=seed, lang=lang)
            enc = self.tok(
                text, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=body
            )
            if len(enc["input_ids"]) == body:
                return text[: enc["offset_mapping"][-1][1]]  # cut after the body-th token
            words *= 2

    def query(self) -> str:
        lang = self.rng.choice(self.langs)
        return " ".join(self.rng.sample(self.textgen.WORDS[lang], 2))


def skewed_examples(tokenizer, n: int, seed: int = 0) -> list[dict]:
    """`n` FlagEmbedding examples: 80% with short passages, 20% with long ones (each passage length drawn anew)."""
    maker, rng = TextMaker(tokenizer, seed), random.Random(seed + 1)
    out = []
    for i in range(n):
        lo, hi = LONG if i % 5 == 0 else SHORT
        out.append(
            {
                "query": maker.query(),
                "pos": [maker.text(rng.randint(lo, hi))],
                "neg": [maker.text(rng.randint(lo, hi))],
            }
        )
    rng.shuffle(out)
    return out


def fixed_length_examples(tokenizer, n: int, length: int, seed: int = 0) -> list[dict]:
    maker = TextMaker(tokenizer, seed)
    return [
        {"query": maker.query(), "pos": [maker.text(length)], "neg": [maker.text(length)]} for _ in range(n)
    ]


def make_trainer(model_dir: Path, out_dir: Path, examples: list[dict], **overrides):
    from m3core.train.config import TrainConfig
    from m3core.train.data import TrainDataset, parse_example
    from m3core.train.trainer import Trainer

    cfg = TrainConfig(
        model=str(model_dir),
        output_dir=str(out_dir),
        train_data=[],
        group_size=GROUP_SIZE,
        query_max_length=32,
        show_progress=False,
        **overrides,
    )
    dataset = TrainDataset(
        [parse_example(e, f"bench[{i}]") for i, e in enumerate(examples)],
        group_size=GROUP_SIZE,
        seed=cfg.seed,
    )
    return Trainer(cfg, dataset=dataset)


# ---------------------------------------------------------------------------------------------- part 1
def throughput(model_dir: Path, work: Path, n_examples: int, budget: int, edges: list[int]) -> dict:
    """One epoch of the same examples per sampler, steps interleaved; real tokens/s and padding fraction."""
    from m3core.model import M3Model

    tokenizer = M3Model.from_pretrained(model_dir).tokenizer
    examples = skewed_examples(tokenizer, n_examples)
    longest = LONG[1]
    random_batch = budget // (GROUP_SIZE * longest)
    common = {"passage_max_length": longest, "tokens_per_batch": budget, "learning_rate": 1e-4}
    trainers = {
        "length_bucket": make_trainer(
            model_dir,
            work / "bucket",
            examples,
            sampler="length_bucket",
            bucket_edges=edges,
            max_batch_size=budget // (GROUP_SIZE * edges[1]),
            **common,
        ),
        "random": make_trainer(
            model_dir, work / "random", examples, sampler="random", batch_size=random_batch, **common
        ),
    }
    batches = {name: list(t.sampler) for name, t in trainers.items()}
    # Warm-up (allocator, thread pool, lazy AdamW state): each trainer steps once on its first batch, uncounted.
    for name, t in trainers.items():
        t.train_step(batches[name][0])
    stats = {name: {"steps": 0, "tokens": 0.0, "padded": 0.0, "seconds": 0.0} for name in trainers}
    load_before = os.getloadavg()
    while True:
        pending = [n for n in trainers if stats[n]["steps"] < len(batches[n])]
        if not pending:
            break
        name = min(pending, key=lambda n: stats[n]["steps"] / len(batches[n]))
        s = stats[name]
        start = time.perf_counter()
        m = trainers[name].train_step(batches[name][s["steps"]])
        s["seconds"] += time.perf_counter() - start
        s["steps"] += 1
        s["tokens"] += m["tokens"]
        s["padded"] += m["padded_tokens"]
    for name, s in stats.items():
        s["tokens_per_s"] = s["tokens"] / s["seconds"]
        s["padding_fraction"] = 1 - s["tokens"] / s["padded"]
        s["step_s"] = s["seconds"] / s["steps"]
        s["batch_sizes"] = sorted({len(b) for b in batches[name]})
    return {
        "examples": n_examples,
        "budget": budget,
        "random_batch": random_batch,
        "edges": edges,
        "bucket_batch_sizes": [
            trainers["length_bucket"].sampler.batch_size(b) for b in range(len(edges) - 1)
        ],
        "stats": stats,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


# ---------------------------------------------------------------------------------------------- part 2
def trial(spec: dict) -> dict:
    """One training step at `spec["batch"]` examples of `spec["length"]`-token passages (run in a fresh child)."""
    import torch

    threads = pin_threads(spec["threads"])
    from m3core.model import M3Model

    tokenizer = M3Model.from_pretrained(spec["model"]).tokenizer
    n, length = spec["batch"], spec["length"]
    # Example 0 is short: a warm-up step on it initializes AdamW's state, the thread pool and the kernels, so
    # the measured step is a steady-state one; its memory is not counted (the peak is reset after it).
    examples = fixed_length_examples(tokenizer, 1, 16, seed=-1) + fixed_length_examples(
        tokenizer, n, length, seed=n
    )
    split = {"sub_batch_size": 1, "activation_checkpointing": True} if spec["split"] else {}
    trainer = make_trainer(
        Path(spec["model"]),
        Path(spec["out"]),
        examples,
        sampler="random",
        batch_size=n,
        passage_max_length=length,
        **split,
    )
    trainer.train_step([0])
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    reset_peak_rss()  # the peak below is the step's, not the set-up's
    rss_before = proc_status_kib("VmRSS")
    start = time.perf_counter()
    metrics = trainer.train_step(list(range(1, n + 1)))
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = {
        "batch": n,
        "split": spec["split"],
        "threads": threads,
        "device": str(trainer.device),
        "bf16": trainer.use_bf16,
        "step_s": seconds,
        "rss_before_mib": rss_before / 1024,
        "peak_mib": (proc_status_kib("VmHWM") - rss_before) / 1024,
        "tokens": metrics["tokens"],
        "loss": metrics["loss"],
    }
    if cuda:
        out["cuda_peak_mib"] = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20
    return out


def trial_runner() -> ForkedRunner:
    """Trials on the CPU (comparable figures on a GPU machine too), in fresh children of a preloaded server.

    The server runs with a fixed mmap threshold, so every buffer of 64 KiB or more is its own mapping and is
    returned to the OS when freed: RSS then follows live tensor memory (glibc's default threshold adapts upwards
    and keeps freed buffers resident, which would hide part of a step's peak).
    """
    return ForkedRunner(
        ["torch", "transformers", "m3core.train.trainer"],
        env={"MALLOC_MMAP_THRESHOLD_": "65536", "CUDA_VISIBLE_DEVICES": ""},
    )


def run_trial_subprocess(spec: dict) -> dict:
    """A trial in a new interpreter (for the GPU part: the forkserver was started CPU-only)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--trial", json.dumps(spec)],
        env=dict(os.environ, **OFFLINE_ENV),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"trial {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def largest_batch(
    run: ForkedRunner, spec: dict, cap_mib: float, limit: int, trials: list[dict]
) -> dict | None:
    """Largest batch (≤ `limit`) whose step peaks at or under `cap_mib`; None when a batch of 1 does not fit.

    Grows from 1 and 2, then probes where the line through the two trials nearest the boundary crosses the cap
    (memory grows about linearly with the batch), keeping a bracket: largest batch seen to fit, smallest seen
    not to. Ends when they are adjacent, so the answer is confirmed by a trial on each side. A secant step costs
    ~2 large trials where doubling and bisecting would cost ~log2(N) of them: on a busy 2-core machine a step at
    the split side's largest batch takes minutes.
    """
    seen: dict[int, dict] = {}

    def probe(b: int) -> bool:
        r = run(trial, {**spec, "batch": b})
        r["fits"] = r["peak_mib"] <= cap_mib
        seen[b] = r
        trials.append(r)
        print(
            f"  {'split' if spec['split'] else 'whole'} batch {b:4d}: step peak {r['peak_mib']:7.0f} MiB "
            f"({'fits' if r['fits'] else 'over the cap'}), step {r['step_s']:6.2f} s",
            flush=True,
        )
        return r["fits"]

    if not probe(1):
        return None
    lo, hi = 1, None  # lo fits, hi does not
    while lo < limit and (hi is None or hi - lo > 1):
        near = hi if hi is not None else max((b for b in seen if b < lo), default=None)
        if near is None:
            b = 2
        else:
            a, c = seen[lo], seen[near]
            slope = (c["peak_mib"] - a["peak_mib"]) / (near - lo)
            b = lo + int((cap_mib - a["peak_mib"]) // slope) if slope > 0 else 2 * lo
            b = max(b, lo + 1)
        b = min(b, hi - 1 if hi is not None else limit)
        if probe(b):
            lo = b
        else:
            hi = b
    return seen[lo]


# ---------------------------------------------------------------------------------------------- main
def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer examples, shorter long length")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a loaded 2-core machine 2 threads run ~3x slower)",
    )
    parser.add_argument(
        "--examples", type=int, default=None, help="part 1 examples (default 160, --quick 96)"
    )
    parser.add_argument(
        "--budget", type=int, default=16384, help="part 1 tokens_per_batch (padded passage tokens per step)"
    )
    parser.add_argument(
        "--edges",
        type=lambda v: [int(x) for x in v.split(",")],
        default=EDGES,
        help=f"part 1 bucket edges (default {','.join(map(str, EDGES))})",
    )
    parser.add_argument(
        "--length", type=int, default=None, help="part 2 passage tokens (default 1024, --quick 512)"
    )
    parser.add_argument(
        "--cap-mib",
        type=float,
        default=None,
        help="part 2 memory cap, MiB above the pre-step RSS (default: 1.5 x a whole batch of 1 at --length)",
    )
    parser.add_argument("--max-batch", type=int, default=256, help="part 2: largest batch tried")
    parser.add_argument("--only", choices=["throughput", "memory"], default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--trial", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.update(OFFLINE_ENV)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    if args.trial:  # the GPU part's child
        print(json.dumps(trial(json.loads(args.trial))))
        return 0

    threads = pin_threads(args.threads)
    import torch

    n_examples = args.examples or (96 if args.quick else 160)
    length = args.length or (512 if args.quick else 1024)
    env = env_summary(threads)
    print(f"torch {env['torch']}, torch.set_num_threads({threads}), {env['cores']} cores: {env['cpu']}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()} (part 1 and the GPU part run on it; part 2 on the CPU)")
    print(f"load average (1/5/15 min) at start: {_load()}")
    print(
        f"model: random XLM-R shape {MODEL_SHAPE} (attention dropout 0.1, as XLM-R), group size {GROUP_SIZE}, "
        "all three modes + self-distillation, AdamW"
    )
    results: dict = {"env": env, "threads": threads, "load_start": os.getloadavg()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="m3-bench-train-") as tmp:
        work = Path(tmp)
        model_dir = build_model(work / "model", max_tokens=max(length, 8192))
        if args.only in (None, "throughput"):
            results["throughput"] = report_throughput(model_dir, work, n_examples, args.budget, args.edges)
        if args.only in (None, "memory"):
            results["memory"] = report_memory(model_dir, work, length, args.cap_mib, args.max_batch, threads)
            if torch.cuda.is_available():
                results["cuda"] = report_cuda(model_dir, work, threads)
    results["load_end"] = os.getloadavg()
    print(f"\nload average (1/5/15 min) at end: {_load()}; total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report_throughput(model_dir: Path, work: Path, n_examples: int, budget: int, edges: list[int]) -> dict:
    print(f"\n== 1. tokens/s: length-bucketed vs random batches ({n_examples} examples, one epoch each) ==")
    r = throughput(model_dir, work, n_examples, budget, edges)
    print(
        f"data: 80% of examples with passages of {SHORT[0]}-{SHORT[1]} tokens, 20% with {LONG[0]}-{LONG[1]}.\n"
        f"same budget for both: tokens_per_batch={budget} padded passage tokens per step.\n"
        f"length_bucket: edges {r['edges']}, examples per batch = budget // ({GROUP_SIZE} x bucket's upper edge) "
        f"= {r['bucket_batch_sizes']}.\n"
        f"random: {r['random_batch']} examples per batch = budget // ({GROUP_SIZE} x {LONG[1]}): its batches mix "
        "lengths and pad to their longest member, so the batch size must be the one whose worst batch (holding "
        "the longest example) stays within the same budget; a larger one would exceed the memory the bucketed "
        "run was given whenever it draws a long example."
    )
    s = r["stats"]
    rows = [
        [
            name,
            v["steps"],
            f"{v['tokens']:.0f}",
            f"{v['padding_fraction']:.1%}",
            f"{v['step_s']:.3f}",
            f"{v['seconds']:.1f}",
            f"{v['tokens_per_s']:.0f}",
        ]
        for name, v in s.items()
    ]
    print_table(["sampler", "steps", "real tokens", "padding", "s/step", "seconds", "real tokens/s"], rows)
    r["ratio"] = s["length_bucket"]["tokens_per_s"] / s["random"]["tokens_per_s"]
    print(f"ratio length_bucket / random, real tokens/s: {r['ratio']:.2f}x (target >= 2x)")
    print(
        f"load average before/after this part: {_fmt_load(r['load_before'])} / {_fmt_load(r['load_after'])}"
    )
    return r


def _fmt_load(load: tuple[float, ...]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def report_memory(
    model_dir: Path, work: Path, length: int, cap: float | None, limit: int, threads: int
) -> dict:
    print(
        f"\n== 2. largest batch at {length} tokens under one memory cap: whole batch vs split-batch ==\n"
        "each trial: a fresh child process, one warm-up step on a short example, then one training step at the "
        "batch size;\nmemory = peak RSS during the step (VmHWM, reset before it) minus RSS before it. "
        f"group size {GROUP_SIZE}, every passage {length} tokens.\n"
        "why the gap is large on CPU: with attention dropout > 0 (training), torch's CPU SDPA runs its math "
        "kernel, which keeps every head's L x L attention probabilities for backward; a whole batch holds them for "
        "all passages and layers, split-batch with checkpointing for one passage and one layer at a time."
    )
    run = trial_runner()
    base = {"model": str(model_dir), "length": length, "threads": threads}
    out: dict = {"length": length, "load_before": os.getloadavg()}
    trials: list[dict] = []
    if cap is None:
        one = run(trial, {**base, "split": False, "batch": 1, "out": str(work / "trial-cap")})
        trials.append(one)
        cap = round(1.5 * one["peak_mib"] / 10) * 10
        print(
            f"cap: {cap:.0f} MiB = 1.5 x the {one['peak_mib']:.0f} MiB a whole batch of 1 example peaks at, "
            "so the whole-batch side fits 1 example"
        )
    out["cap_mib"] = cap
    for split in (False, True):
        spec = {**base, "split": split, "out": str(work / f"trial-{split}")}
        out["split" if split else "whole"] = largest_batch(run, spec, cap, limit, trials)
    out["trials"], out["load_after"] = trials, os.getloadavg()
    rows = []
    for key, label in (("whole", "whole batch"), ("split", "split-batch (sub_batch_size=1 + checkpointing)")):
        r = out[key]
        if r is None:
            rows.append([label, 0, "-", "-", "-"])
        else:
            rows.append(
                [
                    label,
                    r["batch"],
                    f"{r['peak_mib']:.0f}",
                    f"{r['step_s']:.2f}",
                    f"{r['step_s'] / r['batch']:.2f}",
                ]
            )
    print(f"cap {cap:.0f} MiB above the pre-step RSS; {length} tokens per passage")
    print_table(["", "largest batch", "step peak MiB", "step s", "s/example"], rows)
    if out["whole"] and out["split"]:
        out["ratio"] = out["split"]["batch"] / out["whole"]["batch"]
        capped = f" (stopped at --max-batch {limit})" if out["split"]["batch"] >= limit else ""
        print(f"ratio split / whole, largest batch: {out['ratio']:.1f}x{capped} (target >= 10x)")
    print(
        f"load average before/after this part: {_fmt_load(out['load_before'])} / {_fmt_load(out['load_after'])}"
    )
    return out


def report_cuda(model_dir: Path, work: Path, threads: int) -> dict:
    """One bf16 step per side on the GPU at fixed batches: peak CUDA memory and step time."""
    print("\n== GPU: one training step (bf16 autocast), peak CUDA memory whole vs split-batch ==")
    rows, out = [], {}
    for length, batch in CUDA_RUNS:
        for split in (False, True):
            spec = {
                "model": str(model_dir),
                "length": length,
                "batch": batch,
                "split": split,
                "threads": threads,
                "out": str(work / f"cuda-{length}-{split}"),
            }
            r = run_trial_subprocess(spec)
            out[f"{length}-{'split' if split else 'whole'}"] = r
            rows.append(
                [
                    length,
                    batch,
                    split,
                    r["device"],
                    r["bf16"],
                    f"{r['cuda_peak_mib']:.0f}" if "cuda_peak_mib" in r else "-",
                    f"{r['step_s']:.3f}",
                ]
            )
    print_table(["tokens", "batch", "split", "device", "bf16", "step peak CUDA MiB", "step s"], rows)
    return out


if __name__ == "__main__":
    sys.exit(main())
