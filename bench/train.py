"""Training throughput and memory: length-bucketed vs random batches, split-batch vs whole batches at a long length.

    .venv/bin/python bench/train.py [--quick] [--threads 1] [--length 1024] [--cap-mib N] [--json FILE]
    .venv/bin/python bench/train.py --only memory --model DIR --lengths 2048,4096,8192 --cap-mib N
        [--max-batch N] [--trial-timeout-s 900] [--reserve-mib 2048] [--threads 2]

Both parts drive the real `m3core.train.Trainer` (`train_step`: tokenization, all three modes, M3Loss with
self-distillation, backward, AdamW) on a small random XLM-R-shaped model (hidden 128, 2 layers, 4 heads, attention
dropout 0.1 as in XLM-R, 8192 positions, tokenizer trained on generated text), built in a temporary directory;
`--model DIR` uses that model directory instead (e.g. multilingual-e5-small after `m3 extend-positions`).

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
   `--lengths` runs this part at each length in turn (each with its own default cap, unless `--cap-mib`) and ends
   with a summary table. Every trial runs under a watchdog (`run_trial`): killed past `--trial-timeout-s` (the
   length then does not fit this machine's time: "did not finish in N s"), or when the machine's available memory
   falls under `--reserve-mib` (a step far over what the machine holds ends as a result, not in the kernel's OOM
   killer); a batch is not tried when the largest finished one predicts more than 90% of the time limit. A trial
   killed, out of memory or failing is reported and the bench goes on.

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
    ChildKilled,
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
    sys.path.insert(0, str(ROOT / "tests" / "support"))
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
        t.train_step([batches[name][0]])
    stats = {name: {"steps": 0, "tokens": 0.0, "padded": 0.0, "seconds": 0.0} for name in trainers}
    load_before = os.getloadavg()
    while True:
        pending = [n for n in trainers if stats[n]["steps"] < len(batches[n])]
        if not pending:
            break
        name = min(pending, key=lambda n: stats[n]["steps"] / len(batches[n]))
        s = stats[name]
        start = time.perf_counter()
        m = trainers[name].train_step([batches[name][s["steps"]]])
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
    """One training step at `spec["batch"]` examples of `spec["length"]`-token passages (run in a fresh child).

    With `spec["status"]` (a path), the RSS before the step and the step's start are written there as the step
    starts, so that a trial killed during its step can still be reported (see `run_trial`).
    """
    started = time.perf_counter()
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
    overrides = {"sub_batch_size": 1, "activation_checkpointing": True} if spec["split"] else {}
    if spec.get("attention_dropout") is not None:
        overrides["attention_dropout"] = spec["attention_dropout"]
    trainer = make_trainer(
        Path(spec["model"]),
        Path(spec["out"]),
        examples,
        sampler="random",
        batch_size=n,
        passage_max_length=length,
        **overrides,
    )
    trainer.train_step([[0]])
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    reset_peak_rss()  # the peak below is the step's, not the set-up's
    rss_before = proc_status_kib("VmRSS")
    start = time.perf_counter()
    if spec.get("status"):
        Path(spec["status"]).write_text(
            json.dumps(
                {"rss_before_kib": rss_before, "setup_s": start - started, "step_started": time.time()}
            )
        )
    metrics = trainer.train_step([list(range(1, n + 1))])  # one batch: a plain step
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
        "setup_s": start - started,
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


def run_trial(run: ForkedRunner, spec: dict, timeout_s: float | None, reserve_mib: float | None) -> dict:
    """`trial(spec)` in a fresh child, under a watchdog: killed past `timeout_s` seconds, or when the machine's
    available memory falls under `reserve_mib` (so a step far over what the machine holds ends as a result, not
    in the kernel's OOM killer or in other processes' memory). Never raises: a killed or failed trial comes back
    as a record with `outcome` "time", "memory" (the watchdog's), "died" (killed from outside: the kernel's OOM
    killer, most likely), "alloc" (torch could not allocate) or "error"; a finished one has outcome "done"."""
    status = Path(f"{spec['out']}.batch-{spec['batch']}.json")
    status.unlink(missing_ok=True)
    started = time.perf_counter()
    record = {"batch": spec["batch"], "split": spec["split"], "length": spec["length"], "step_s": None}
    try:
        r = run(trial, {**spec, "status": str(status)}, timeout_s=timeout_s, min_available_mib=reserve_mib)
        r["outcome"] = "done"
    except ChildKilled as e:
        r = {
            **record,
            "outcome": e.why,
            "error": str(e),
            "killed_after_s": e.seconds,
            "max_rss_mib": e.max_rss_mib,
        }
        if status.is_file():  # killed during the step (not while loading or warming up)
            st = json.loads(status.read_text())
            r["step_ran_s"] = time.time() - st["step_started"]
            r["setup_s"] = e.seconds - r["step_ran_s"]  # process start, model, Trainer, warm-up step
            r["rss_before_mib"] = st["rss_before_kib"] / 1024
            r["peak_at_least_mib"] = e.max_rss_mib - r["rss_before_mib"]
    except RuntimeError as e:
        text = str(e)
        outcome = "error"
        if "died (exit code -9)" in text:
            outcome = "died"
        elif "can't allocate memory" in text or "out of memory" in text.lower():
            outcome = "alloc"
        r = {**record, "outcome": outcome, "error": text.strip().splitlines()[-1][:300]}
    status.unlink(missing_ok=True)
    r["trial_s"] = time.perf_counter() - started
    return r


def _peak(r: dict) -> float | None:
    """A trial's step memory: measured when it finished, a lower bound when it was killed during its step."""
    return r["peak_mib"] if r["outcome"] == "done" else r.get("peak_at_least_mib")


def describe_trial(r: dict, cap_mib: float, timeout_s: float | None) -> str:
    """One line on a trial's outcome, as the probes print it."""
    if r["outcome"] == "done":
        return (
            f"step peak {r['peak_mib']:7.0f} MiB ({'fits' if r['fits'] else 'over the cap'}), "
            f"step {r['step_s']:6.2f} s"
        )
    during = (
        f"its step had run {r['step_ran_s']:.0f} s, after {r['setup_s']:.0f} s of start-up and set-up; "
        f"step memory >= {r['peak_at_least_mib']:.0f} MiB"
        if "step_ran_s" in r
        else "during set-up, before the step"
    )
    over = " (over the cap)" if (r.get("peak_at_least_mib") or 0) > cap_mib else ""
    if r["outcome"] == "time":
        return f"did not finish in {timeout_s:.0f} s: killed ({during})"
    if r["outcome"] == "memory":
        return f"{r['error']}; {during}{over}"
    if r["outcome"] == "died":
        return "died from SIGKILL (the kernel's OOM killer, most likely): out of memory"
    if r["outcome"] == "alloc":
        return f"out of memory: {r['error']}"
    return f"failed: {r['error']}"


def largest_batch(
    run: ForkedRunner,
    spec: dict,
    cap_mib: float,
    limit: int,
    trials: list[dict],
    timeout_s: float | None = None,
    reserve_mib: float | None = None,
) -> dict:
    """Largest batch (≤ `limit`) whose step peaks at or under `cap_mib` (and finishes within `timeout_s`).

    Grows from 1 and 2, then probes where the line through the two trials nearest the boundary crosses the cap
    (memory grows about linearly with the batch), keeping a bracket: largest batch seen to fit, smallest seen
    not to. Ends when they are adjacent, so the answer is confirmed by a trial on each side. A secant step costs
    ~2 large trials where doubling and bisecting would cost ~log2(N) of them: on a busy 2-core machine a step at
    the split side's largest batch takes minutes. With `timeout_s`, a batch is not tried when the largest one
    that fits predicts (set-up + its step time x batch / its batch) more than 90% of the limit: the search stops
    there, limited by time. Returns `{"best": the largest fitting trial or None, "stop": why the search ended
    (text), "stop_kind": cap / time / memory / max-batch / error}`.
    """
    seen: dict[int, dict] = {}

    def probe(b: int) -> bool:
        r = run_trial(run, {**spec, "batch": b}, timeout_s, reserve_mib)
        r["fits"] = r["outcome"] == "done" and r["peak_mib"] <= cap_mib
        seen[b] = r
        trials.append(r)
        side = "split" if spec["split"] else "whole"
        print(f"  {side} batch {b:4d}: {describe_trial(r, cap_mib, timeout_s)}", flush=True)
        return r["fits"]

    def why(r: dict) -> tuple[str, str]:
        if r["outcome"] == "done":
            return "cap", f"batch {r['batch']} over the cap"
        if r["outcome"] == "memory" and (_peak(r) or 0) > cap_mib:
            return "cap", f"batch {r['batch']} over the cap (killed at >= {_peak(r):.0f} MiB: machine memory)"
        if r["outcome"] == "time":
            return "time", f"batch {r['batch']} did not finish in {timeout_s:.0f} s"
        if r["outcome"] in ("memory", "died", "alloc"):
            return "memory", f"batch {r['batch']} does not fit this machine's memory"
        return "error", f"batch {r['batch']} failed"

    if not probe(1):
        kind, text = why(seen[1])
        return {"best": None, "stop_kind": kind, "stop": text}
    lo, hi = 1, None  # lo fits, hi does not
    stop = None
    while lo < limit and (hi is None or hi - lo > 1):
        near = hi if hi is not None and _peak(seen[hi]) is not None else None
        if near is None:
            near = max((b for b in seen if b < lo and _peak(seen[b]) is not None), default=None)
        if near is None:
            b = 2
        else:
            a, c = seen[lo], seen[near]
            slope = (_peak(c) - a["peak_mib"]) / (near - lo)
            b = lo + int((cap_mib - a["peak_mib"]) // slope) if slope > 0 else 2 * lo
            b = max(b, lo + 1)
        b = min(b, hi - 1 if hi is not None else limit)
        if timeout_s is not None:
            a = seen[lo]
            setup = a["trial_s"] - a["step_s"]
            in_time = int((0.9 * timeout_s - setup) * lo // a["step_s"])
            if b > in_time:
                if in_time <= lo:
                    predicted = setup + a["step_s"] * (lo + 1) / lo
                    stop = ("time", f"batch {lo + 1} predicted {predicted:.0f} s > 90% of {timeout_s:.0f} s")
                    print(
                        f"  {'split' if spec['split'] else 'whole'} batch {lo + 1} not run: predicted "
                        f"{predicted:.0f} s ({setup:.0f} s set-up + {a['step_s'] / lo:.0f} s/example, from batch "
                        f"{lo}) > 90% of the {timeout_s:.0f} s limit",
                        flush=True,
                    )
                    break
                b = in_time
        if probe(b):
            lo = b
        else:
            hi = b
    if stop is None:
        stop = ("max-batch", f"--max-batch {limit}") if lo >= limit else why(seen[hi])
    return {"best": seen[lo], "stop_kind": stop[0], "stop": stop[1]}


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
    parser.add_argument(
        "--lengths",
        type=lambda v: [int(x) for x in v.split(",") if x.strip()],
        default=None,
        help="part 2 at each of these passage lengths in turn (comma list; instead of --length)",
    )
    parser.add_argument(
        "--trial-timeout-s",
        type=float,
        default=900,
        help="part 2: a trial still running after this many seconds is killed and reported (default 900)",
    )
    parser.add_argument(
        "--reserve-mib",
        type=float,
        default=2048,
        help="part 2: a trial is killed when the machine's available memory falls under this (default 2048)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="use this model directory (e.g. an extended multilingual-e5-small) instead of the small random one",
    )
    parser.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="part 2: TrainConfig.attention_dropout of every trial (default: the model's; 0 lets CPU SDPA use its "
        "fused kernel, which keeps no L x L probabilities)",
    )
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

    if args.lengths and args.length:
        parser.error("give --length or --lengths, not both")
    n_examples = args.examples or (96 if args.quick else 160)
    length = args.length or (512 if args.quick else 1024)
    lengths = args.lengths or [length]
    env = env_summary(threads)
    print(f"torch {env['torch']}, torch.set_num_threads({threads}), {env['cores']} cores: {env['cpu']}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()} (part 1 and the GPU part run on it; part 2 on the CPU)")
    print(f"load average (1/5/15 min) at start: {_load()}")
    if args.model is None:
        print(
            f"model: random XLM-R shape {MODEL_SHAPE} (attention dropout 0.1, as XLM-R), group size {GROUP_SIZE}, "
            "all three modes + self-distillation, AdamW"
        )
    else:
        c = transformers.AutoConfig.from_pretrained(args.model)
        print(
            f"model: {args.model} ({c.model_type}, hidden {c.hidden_size}, {c.num_hidden_layers} layers, "
            f"{c.num_attention_heads} heads, FFN {c.intermediate_size}, vocabulary {c.vocab_size}, "
            f"{c.max_position_embeddings} position rows, attention dropout {c.attention_probs_dropout_prob}), "
            f"group size {GROUP_SIZE}, all three modes + self-distillation, AdamW"
        )
    results: dict = {"env": env, "threads": threads, "load_start": os.getloadavg()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="m3-bench-train-") as tmp:
        work = Path(tmp)
        model_dir = args.model or build_model(work / "model", max_tokens=max(*lengths, 8192))
        if args.only in (None, "throughput"):
            results["throughput"] = report_throughput(model_dir, work, n_examples, args.budget, args.edges)
        if args.only in (None, "memory"):
            run = trial_runner()
            outs = [
                report_memory(
                    model_dir,
                    work,
                    n,
                    args.cap_mib,
                    args.max_batch,
                    threads,
                    args.trial_timeout_s,
                    args.reserve_mib,
                    run=run,
                    explain=i == 0,
                    attention_dropout=args.attention_dropout,
                )
                for i, n in enumerate(lengths)
            ]
            if args.lengths:
                results["memory_by_length"] = outs
                report_lengths(outs)
            else:
                results["memory"] = outs[0]
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
    model_dir: Path,
    work: Path,
    length: int,
    cap: float | None,
    limit: int,
    threads: int,
    timeout_s: float | None = None,
    reserve_mib: float | None = None,
    run: ForkedRunner | None = None,
    explain: bool = True,
    attention_dropout: float | None = None,
) -> dict:
    print(f"\n== 2. largest batch at {length} tokens under one memory cap: whole batch vs split-batch ==")
    if explain:
        print(
            "each trial: a fresh child process, one warm-up step on a short example, then one training step at the "
            "batch size;\nmemory = peak RSS during the step (VmHWM, reset before it) minus RSS before it. "
            f"group size {GROUP_SIZE}, every passage {length} tokens.\n"
            "why the gap is large on CPU: with attention dropout > 0 (training), torch's CPU SDPA runs its math "
            "kernel, which keeps every head's L x L attention probabilities for backward; a whole batch holds them "
            "for all passages and layers, split-batch with checkpointing for one passage and one layer at a time.\n"
            f"a trial is killed after {timeout_s:.0f} s, or when the machine's available memory falls under "
            f"{reserve_mib:.0f} MiB"
        )
    run = run or trial_runner()
    base = {
        "model": str(model_dir),
        "length": length,
        "threads": threads,
        "attention_dropout": attention_dropout,
    }
    if attention_dropout is not None:
        print(f"attention dropout set to {attention_dropout} for every trial (TrainConfig.attention_dropout)")
    out: dict = {"length": length, "load_before": os.getloadavg()}
    trials: list[dict] = []
    if cap is None:
        one = run_trial(
            run, {**base, "split": False, "batch": 1, "out": str(work / "trial-cap")}, timeout_s, reserve_mib
        )
        trials.append(one)
        if one["outcome"] != "done":
            print(f"cap: cannot be derived, a whole batch of 1 example {describe_trial(one, 0, timeout_s)}")
            out.update(cap_mib=None, whole=None, split=None, trials=trials, load_after=os.getloadavg())
            return out
        cap = round(1.5 * one["peak_mib"] / 10) * 10
        print(
            f"cap: {cap:.0f} MiB = 1.5 x the {one['peak_mib']:.0f} MiB a whole batch of 1 example peaks at, "
            "so the whole-batch side fits 1 example"
        )
    out["cap_mib"] = cap
    for split in (False, True):
        spec = {**base, "split": split, "out": str(work / f"trial-{split}")}
        key = "split" if split else "whole"
        found = largest_batch(run, spec, cap, limit, trials, timeout_s, reserve_mib)
        out[key], out[f"{key}_stop"], out[f"{key}_stop_kind"] = (
            found["best"],
            found["stop"],
            found["stop_kind"],
        )
    out["trials"], out["load_after"] = trials, os.getloadavg()
    rows = []
    for key, label in (("whole", "whole batch"), ("split", "split-batch (sub_batch_size=1 + checkpointing)")):
        r = out[key]
        if r is None:
            rows.append([label, 0, "-", "-", "-", out[f"{key}_stop"]])
        else:
            rows.append(
                [
                    label,
                    r["batch"],
                    f"{r['peak_mib']:.0f}",
                    f"{r['step_s']:.2f}",
                    f"{r['step_s'] / r['batch']:.2f}",
                    out[f"{key}_stop"],
                ]
            )
    print(f"cap {cap:.0f} MiB above the pre-step RSS; {length} tokens per passage")
    print_table(["", "largest batch", "step peak MiB", "step s", "s/example", "search stopped by"], rows)
    if out["whole"] and out["split"]:
        out["ratio"] = out["split"]["batch"] / out["whole"]["batch"]
        capped = f" (stopped at --max-batch {limit})" if out["split"]["batch"] >= limit else ""
        print(f"ratio split / whole, largest batch: {out['ratio']:.1f}x{capped} (target >= 10x)")
    for key in ("whole", "split"):
        fitting = {r["batch"]: r for r in trials if r.get("fits") and r["split"] == (key == "split")}
        done = [fitting[b] for b in sorted(fitting)]
        if out[f"{key}_stop_kind"] in ("time", "max-batch") and len(done) >= 2:
            a, b = done[-2], done[-1]
            slope = (b["peak_mib"] - a["peak_mib"]) / (b["batch"] - a["batch"])
            if slope > 0:
                out[f"{key}_projected"] = b["batch"] + int((cap - b["peak_mib"]) // slope)
                print(
                    f"{key}: the line through batches {a['batch']} and {b['batch']} ({slope:.0f} MiB per example) "
                    f"reaches the cap at ~{out[f'{key}_projected']} examples (a projection: not run)"
                )
        if out[f"{key}_stop_kind"] == "time":
            done = out[key]
            figure = (
                f"the largest batch that finished, {done['batch']}, took {done['step_s']:.0f} s a step"
                if done
                else "no batch finished"
            )
            print(f"{key}: {length} tokens does not fit this machine's time ({out[f'{key}_stop']}; {figure})")
    print(
        f"load average before/after this part: {_fmt_load(out['load_before'])} / {_fmt_load(out['load_after'])}"
    )
    return out


def report_lengths(outs: list[dict]) -> None:
    """The summary over `--lengths`: per length and side, the largest batch under the cap, or why none."""
    print("\n== 2. summary: largest batch under the cap per length, whole batch vs split-batch ==")
    rows = []
    for out in outs:
        for key, label in (("whole", "whole batch"), ("split", "split-batch")):
            r = out.get(key)
            cap = "-" if out.get("cap_mib") is None else f"{out['cap_mib']:.0f}"
            stop = out.get(f"{key}_stop", "no cap")
            if r is None:
                rows.append([out["length"], label, cap, 0, "-", "-", "-", stop])
            else:
                rows.append(
                    [
                        out["length"],
                        label,
                        cap,
                        r["batch"],
                        f"{r['peak_mib']:.0f}",
                        f"{r['step_s']:.1f}",
                        f"{r['step_s'] / r['batch']:.1f}",
                        stop,
                    ]
                )
    print_table(
        [
            "tokens",
            "side",
            "cap MiB",
            "largest batch",
            "step peak MiB",
            "step s",
            "s/example",
            "search stopped by",
        ],
        rows,
    )


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
