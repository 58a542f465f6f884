"""The training loop: length-bucketed split-batch steps, cross-device negatives, checkpoints you can resume.

One step: draw a batch (one length bucket and batch key), tokenize its queries and passages, encode both in one
forward of `DualEncoder` (sub-batches under activation checkpointing when `sub_batch_size` is set — the
split-batch trick that makes long-text batches fit), score every mode, compute `M3Loss`, backward; after
`gradient_accumulation_steps` such batches, step the optimizer (through a loss scaler under fp16).
Runs alone (`m3 train --config F`) or under `torchrun` (one process per GPU; gloo on CPU).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from m3core.model import M3Model
from m3core.modes import HEADS
from m3core.scoring import colbert_score_matrix, dense_score_matrix, sparse_score_matrix
from m3core.train.bucket_sampler import LengthBucketBatchSampler, RandomBatchSampler
from m3core.train.callbacks import JsonlLogger, TrainerCallback, callbacks_for
from m3core.train.config import TrainConfig
from m3core.train.data import TrainDataset
from m3core.train.distributed import gather_with_grad, is_distributed, rank_and_world
from m3core.train.losses import M3Loss, group_scores
from m3core.train.output_dir import (  # latest_checkpoint: still importable from here
    STATE_FILE,
    check_resume,
    data_fingerprint,
    latest_checkpoint,  # noqa: F401
    resume_checkpoint,
    trim_log,
)

logger = logging.getLogger(__name__)


class DualEncoder(nn.Module):
    """Queries and passages through one M3Model in a single forward (what DDP wraps)."""

    def __init__(self, model: M3Model, sub_batch_size: int | None):
        super().__init__()
        self.model, self.sub_batch_size = model, sub_batch_size

    def encode(self, ids: torch.Tensor, mask: torch.Tensor, modes: set[str]) -> dict[str, torch.Tensor]:
        step = self.sub_batch_size or ids.shape[0]
        chunks = []
        for start in range(0, ids.shape[0], step):  # split-batch: activations of one chunk at a time
            o = self.model(
                ids[start : start + step],
                mask[start : start + step],
                dense="dense" in modes,
                sparse="sparse" in modes,
                colbert="colbert" in modes,
            )
            chunks.append({k: v for k, v in vars(o).items() if v is not None})
        return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}

    def forward(self, q_ids, q_mask, p_ids, p_mask, modes: tuple[str, ...]):
        return self.encode(q_ids, q_mask, set(modes)), self.encode(p_ids, p_mask, set(modes))


def batch_scores(
    q: dict[str, torch.Tensor],
    p: dict[str, torch.Tensor],
    modes: tuple[str, ...],
    group_size: int,
    in_batch: bool = True,
    cross_device: str = "none",
    pad_id: int = 1,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Score matrices per mode for this rank's queries, the positive's column per query, and `M3Loss` extras.

    `q`/`p` hold the encoder outputs (`dense`, `sparse`, `colbert`, `colbert_mask`, `input_ids`) of B queries and
    their B·G passages (each query's group contiguous, positive first). `cross_device`: `none` — in-batch
    negatives of this rank; `all` — every mode scores against the passages of all ranks; `dense` — only the dense
    loss does (`dense_wide`), the ensemble and the other modes stay in-batch (FlagEmbedding's choice: gathering
    token-level sparse/ColBERT outputs costs memory).
    """
    bq = next(iter(q.values())).shape[0]
    rank, _ = rank_and_world()
    if not is_distributed():
        cross_device = "none"
    if cross_device == "all":
        p = {
            k: gather_with_grad(
                v.float() if v.dtype == torch.bool else v, pad_value=pad_id if k == "input_ids" else 0
            )
            for k, v in p.items()
        }
    if "colbert_mask" in p:
        p["colbert_mask"] = p["colbert_mask"].bool()
    scores = {}
    if "dense" in modes:
        scores["dense"] = dense_score_matrix(q["dense"], p["dense"])
    if "sparse" in modes:
        scores["sparse"] = sparse_score_matrix(q["sparse"], q["input_ids"], p["sparse"], p["input_ids"])
    if "colbert" in modes:
        scores["colbert"] = colbert_score_matrix(
            q["colbert"], q["colbert_mask"], p["colbert"], p["colbert_mask"]
        )
    scores = {k: v.float() for k, v in scores.items()}
    device = scores[modes[0]].device
    local = torch.arange(bq, device=device)
    target = (local + (rank * bq if cross_device == "all" else 0)) * group_size
    extra: dict[str, torch.Tensor] = {}
    if cross_device == "dense" and "dense" in modes:
        wide = dense_score_matrix(q["dense"], gather_with_grad(p["dense"])).float()
        extra = {"dense_wide": wide, "dense_wide_target": (local + rank * bq) * group_size}
    if not in_batch:  # each query against its own group only (e.g. classification data)
        scores = {k: group_scores(v, target, group_size) for k, v in scores.items()}
        target = torch.zeros(bq, dtype=torch.long, device=device)
    return scores, target, extra


def _rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain values, so a checkpoint loads with `weights_only=True`."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Train an M3 model as `config` says. `train()` returns the run summary (also saved as JSON)."""

    def __init__(
        self,
        config: TrainConfig,
        callbacks: list[TrainerCallback] | None = None,
        dataset: TrainDataset | None = None,
    ):
        self.config = cfg = config
        self.rank, self.world = rank_and_world()
        self.device = torch.device(
            f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        )
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)

        model = M3Model.from_pretrained(cfg.model, attn_implementation="sdpa")
        if cfg.pooling:
            model.config.pooling = cfg.pooling
        if cfg.extend_positions_to and cfg.extend_positions_to > model.max_tokens:
            model.extend_positions(cfg.extend_positions_to)
        if cfg.attention_dropout is not None:
            model.set_attention_dropout(cfg.attention_dropout)
        # The prompts the model is trained with become its profile (saved in m3_config.json): a config's explicit
        # value wins, else the model's own (e5: "query: " / "passage: "), so the checkpoint is used as trained.
        if cfg.query_instruction is not None:
            model.config.query_instruction = cfg.query_instruction or None
        if cfg.passage_instruction is not None:
            model.config.passage_instruction = cfg.passage_instruction or None
        model.check_length(max(cfg.query_max_length, cfg.passage_max_length))
        model.config.query_max_length, model.config.passage_max_length = (
            cfg.query_max_length,
            cfg.passage_max_length,
        )
        if "encoder" in cfg.frozen:
            model.backbone.requires_grad_(False)
        for head in HEADS:
            if head in cfg.frozen or head not in cfg.modes:
                getattr(model, f"{head}_head").requires_grad_(False)
        if cfg.use_checkpointing and "encoder" not in cfg.frozen:
            if getattr(model.backbone.config, "use_cache", False):
                model.backbone.config.use_cache = False  # an encoder caches nothing; silences the warning
            model.backbone.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        self.model = model.to(self.device).train()
        self.tokenizer = model.tokenizer
        self.net: nn.Module = DualEncoder(self.model, cfg.sub_batch_size)
        if is_distributed():
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        cuda = self.device.type == "cuda"
        self.use_bf16 = not cfg.fp16 and (
            cfg.bf16 == "on" or (cfg.bf16 == "auto" and cuda and torch.cuda.is_bf16_supported())
        )
        self.autocast_dtype = torch.float16 if cfg.fp16 else torch.bfloat16 if self.use_bf16 else None
        # fp16 needs a dynamic loss scaler (its range underflows small gradients); the loss itself is computed from
        # fp32 scores (`batch_scores` casts), so the scaled InfoNCE cannot overflow to inf or collapse to 0.
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.fp16 else None

        self._dataset_from_config = dataset is None
        self.dataset = dataset or TrainDataset.from_jsonl(
            cfg.train_data,
            skip_bad_lines=cfg.skip_bad_lines,
            group_size=cfg.group_size,
            query_instruction=self.model.config.query_instruction,
            passage_instruction=self.model.config.passage_instruction,
            seed=cfg.seed,
            flagembedding_types=cfg.flagembedding_types,
        )
        n = len(self.dataset)
        keys = [self.dataset.batch_key(i, cfg.same_dataset_within_batch) for i in range(n)]
        if cfg.sampler == "length_bucket":
            self.sampler = LengthBucketBatchSampler(
                self._example_lengths(),
                cfg.group_size,
                cfg.tokens_per_batch,
                cfg.bucket_edges,
                cfg.max_batch_size,
                cfg.seed,
                self.world,
                self.rank,
                keys=keys,
                group_sizes=[self.dataset.example_group_size(i) for i in range(n)],
                query_tokens=cfg.query_max_length,
                drop_last=cfg.drop_last,
            )
        else:
            self.sampler = RandomBatchSampler(
                n, cfg.batch_size, cfg.seed, self.world, self.rank, keys=keys, drop_last=cfg.drop_last
            )
        batches_per_epoch = len(self.sampler)
        steps_per_epoch = batches_per_epoch // cfg.gradient_accumulation_steps
        if steps_per_epoch == 0:
            raise ValueError(
                f"no optimizer step can be formed from {n} examples on {self.world} ranks: {batches_per_epoch} "
                f"batches per epoch, gradient_accumulation_steps={cfg.gradient_accumulation_steps}"
                + (f" ({self.sampler.dropped} examples dropped by drop_last)" if cfg.drop_last else "")
            )
        if self.sampler.dropped and self.rank == 0:
            logger.info("an epoch leaves out %d of %d examples (incomplete batches)", self.sampler.dropped, n)
        self.total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
        self.teacher_temperature = self._teacher_temperature()

        self.loss_fn = M3Loss(
            cfg.temperature,
            cfg.ensemble_weights,
            cfg.mode_weights,
            cfg.self_distill,
            cfg.self_distill_start_step,
            cfg.modes,
            cfg.kd_loss,
            self.teacher_temperature,
            cfg.self_distill_temperature,
            cfg.self_distill_weights,
        )
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=cfg.learning_rate)
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(cfg.warmup_ratio * self.total_steps), self.total_steps
        )
        self.step = 0
        self.callbacks = [
            JsonlLogger(self.out / "train_log.jsonl"),
            *callbacks_for(cfg.report_to),
            *(callbacks or []),
        ]

    # ------------------------------------------------------------------ set-up helpers
    def _teacher_temperature(self) -> float:
        """The teacher-score temperature: the config's, or for `auto` τ on similarity-range scores, else 1."""
        cfg = self.config
        scored = [
            ex for ex in self.dataset.examples if ex.pos_scores is not None and ex.neg_scores is not None
        ]
        if cfg.kd_loss == "none":
            if scored and self.rank == 0:
                logger.warning(
                    "%d examples carry teacher scores; kd_loss is none, so they are not used", len(scored)
                )
            return 1.0 if cfg.teacher_temperature == "auto" else cfg.teacher_temperature
        if not scored:
            raise ValueError(f"kd_loss={cfg.kd_loss} but no training example has pos_scores and neg_scores")
        if cfg.teacher_temperature != "auto":
            return cfg.teacher_temperature
        spread = float(
            np.median([max(e.pos_scores + e.neg_scores) - min(e.pos_scores + e.neg_scores) for e in scored])
        )
        # A reranker's logits spread over several units within a group (softmax at 1 is meaningful); similarities
        # (cosine, the miner's hybrid) spread over tenths, where softmax at 1 is nearly uniform: use the student's τ.
        t = cfg.temperature if spread < 1.0 else 1.0
        if self.rank == 0:
            logger.info(
                "teacher_temperature auto: %g (median spread of teacher scores in a group %.3g)", t, spread
            )
        return t

    def _example_lengths(self) -> list[int]:
        """Tokens of each example's longest passage (truncated), for the length buckets."""
        texts, owner = [], []
        for i, ex in enumerate(self.dataset.examples):
            for t in ex.pos + ex.neg:
                texts.append(t)
                owner.append(i)
        lengths = np.zeros(len(self.dataset), dtype=np.int64)
        for start in range(0, len(texts), 4096):
            enc = self.tokenizer(
                texts[start : start + 4096], truncation=True, max_length=self.config.passage_max_length
            )
            for j, ids in enumerate(enc["input_ids"]):
                k = owner[start + j]
                lengths[k] = max(lengths[k], len(ids))
        return lengths.tolist()

    def _param_groups(self) -> list[dict]:
        cfg, groups = self.config, []
        head_lr = cfg.head_learning_rate or cfg.learning_rate
        for module, lr in (
            (self.model.backbone, cfg.learning_rate),
            (self.model.sparse_head, cfg.sparse_head_learning_rate or head_lr),
            (self.model.colbert_head, head_lr),
        ):
            decay, no_decay = [], []
            for name, p in module.named_parameters():
                if p.requires_grad:
                    (
                        no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay
                    ).append(p)
            groups += [
                {"params": decay, "lr": lr, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "lr": lr, "weight_decay": 0.0},
            ]
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError("no trainable parameters (check `frozen` and `modes`)")
        return groups

    # ------------------------------------------------------------------ one step
    def _tokenize(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def forward_backward(self, indices: list[int], loss_scale: float = 1.0) -> dict[str, float]:
        """Loss of one batch and its backward (gradients accumulate into `.grad`, times `loss_scale`)."""
        cfg = self.config
        groups = [self.dataset.group(i, self.sampler.epoch) for i in indices]
        # The sampler never mixes batch keys, so these hold for the whole global batch: every rank agrees.
        in_batch, group_size = groups[0].in_batch_negatives, groups[0].group_size
        if any(g.in_batch_negatives != in_batch or g.group_size != group_size for g in groups):
            raise RuntimeError("a batch mixes batch keys (in-batch rule or group size); the sampler must not")
        q_ids, q_mask = self._tokenize([g.query for g in groups], cfg.query_max_length)
        p_ids, p_mask = self._tokenize([t for g in groups for t in g.passages], cfg.passage_max_length)
        kd = {}
        if cfg.kd_loss != "none":
            has = [g.teacher_scores is not None for g in groups]
            rows = [g.teacher_scores if g.teacher_scores is not None else [0.0] * group_size for g in groups]
            kd = {
                "teacher_scores": torch.tensor(rows, device=self.device),
                "has_teacher": torch.tensor(has, device=self.device),
            }
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            q, p = self.net(q_ids, q_mask, p_ids, p_mask, self.loss_fn.modes)
        q["input_ids"], p["input_ids"] = q_ids, p_ids
        cross = cfg.cross_device if in_batch else "none"
        scores, target, extra = batch_scores(
            q, p, self.loss_fn.modes, group_size, in_batch, cross, self.tokenizer.pad_token_id
        )
        parts = self.loss_fn(scores, target, step=self.step, group_size=group_size, **kd, **extra)
        loss = parts["loss"] * loss_scale
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        metrics = {k: float(v.detach()) for k, v in parts.items()}
        metrics["tokens"] = float(q_mask.sum() + p_mask.sum())
        metrics["padded_tokens"] = float(q_mask.numel() + p_mask.numel())
        return metrics

    def train_step(self, batches: list[list[int]]) -> dict[str, float]:
        """One optimizer step over `batches` (gradient accumulation; one batch: a plain step)."""
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        per_batch = []
        for k, indices in enumerate(batches):
            # DDP all-reduces gradients on every backward; only the last batch of a step needs it
            sync = k == len(batches) - 1 or not isinstance(self.net, nn.parallel.DistributedDataParallel)
            with contextlib.nullcontext() if sync else self.net.no_sync():
                per_batch.append(self.forward_backward(indices, 1.0 / len(batches)))
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        metrics = {k: float(np.mean([m[k] for m in per_batch])) for k in per_batch[0]}
        for k in ("tokens", "padded_tokens"):
            metrics[k] = sum(m[k] for m in per_batch)
        if self.scaler:
            metrics["loss_scale"] = float(self.scaler.get_scale())
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path | None:
        final = self.out / f"checkpoint-{self.step}"
        tmp = self.out / f".tmp-checkpoint-{self.step}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            self.model.save_pretrained(tmp)
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            if self.scaler:
                torch.save(self.scaler.state_dict(), tmp / "scaler.pt")
            self.config.save(tmp / "train_config.yaml")
        if is_distributed():
            dist.barrier()
        tmp.mkdir(parents=True, exist_ok=True)
        torch.save(_rng_state(), tmp / f"rng_state_{self.rank}.pt")
        if is_distributed():
            dist.barrier()
        if self.rank == 0:
            state = {
                "step": self.step,
                "sampler": self.sampler.state_dict(),
                "world_size": self.world,
                "data_fingerprint": self.data_fingerprint,
            }
            (tmp / STATE_FILE).write_text(json.dumps(state))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)  # atomic: a run killed mid-save leaves the previous checkpoint intact
            self._rotate()
            for cb in self.callbacks:
                cb.on_save(self.step, final)
        if is_distributed():
            dist.barrier()
        return final

    def _rotate(self) -> None:
        limit = self.config.save_total_limit
        ckpts = sorted(
            (p for p in self.out.glob("checkpoint-*") if (p / STATE_FILE).is_file()),
            key=lambda p: int(p.name.split("-")[1]),
        )
        for old in ckpts[:-limit] if limit else []:
            shutil.rmtree(old, ignore_errors=True)

    @functools.cached_property
    def data_fingerprint(self) -> str | None:
        """Digest of the training files (saved with each checkpoint; None for an in-memory dataset)."""
        from m3core.data.examples import jsonl_files

        files = jsonl_files(self.config.train_data) if self._dataset_from_config else []
        return data_fingerprint(files) if files else None

    def resume(self, checkpoint: str | Path, force: bool = False) -> None:
        """Restore weights, optimizer, scheduler, sampler position and RNG states from `checkpoint`, after
        checking it was written by this run's config and data (`force`: resume anyway, with a warning)."""
        ckpt = Path(checkpoint)
        state = json.loads((ckpt / STATE_FILE).read_text())
        check_resume(ckpt, self.config.model_dump(mode="json"), self.data_fingerprint or "", force)
        if state["world_size"] != self.world:
            raise ValueError(
                f"{ckpt} was written by {state['world_size']} processes; this run has {self.world}"
            )
        loaded = M3Model.from_pretrained(ckpt)
        self.model.load_state_dict(loaded.state_dict())
        self.optimizer.load_state_dict(
            torch.load(ckpt / "optimizer.pt", map_location=self.device, weights_only=True)
        )
        self.scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
        if self.scaler and (ckpt / "scaler.pt").is_file():
            self.scaler.load_state_dict(torch.load(ckpt / "scaler.pt", weights_only=True))
        self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        _set_rng_state(torch.load(ckpt / f"rng_state_{self.rank}.pt", weights_only=True))
        if self.rank == 0:  # drop what the interrupted run logged after this checkpoint
            trim_log(self.out, self.step)
        logger.info("resumed from %s at step %d", ckpt, self.step)

    # ------------------------------------------------------------------ the loop
    def _batches(self):
        """This rank's batches, epoch after epoch (the sampler keeps the position, so a checkpoint resumes here)."""
        while True:
            yield from self.sampler

    def train(self, resume_from: str | Path | None = None, force: bool = False) -> dict[str, Any]:
        """Run to `max_steps`; `resume_from` a checkpoint (or "latest": an error if there is none)."""
        cfg = self.config
        if resume_from:
            self.resume(resume_checkpoint(self.out, resume_from), force=force)
        if self.rank == 0:
            cfg.save(self.out / "train_config.yaml")
            for cb in self.callbacks:
                cb.on_train_begin(cfg)
        window: dict[str, list[float]] = defaultdict(list)
        started, tokens_total = time.perf_counter(), 0.0
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not cfg.show_progress or self.rank != 0,
        )
        last = time.perf_counter()
        batches = self._batches()
        while self.step < self.total_steps:
            metrics = self.train_step([next(batches) for _ in range(cfg.gradient_accumulation_steps)])
            now = time.perf_counter()
            metrics["step_time"], last = now - last, now
            tokens_total += metrics["tokens"]
            for k, v in metrics.items():
                window[k].append(v)
            if self.step % cfg.logging_steps == 0 or self.step == self.total_steps:
                self._log(window)
                window.clear()
            bar.update(1)
            bar.set_postfix(
                loss=f"{metrics['loss']:.4f}",
                tok_s=f"{metrics['tokens'] / metrics['step_time']:.0f}",
                s_step=f"{metrics['step_time']:.2f}",
            )
            if cfg.save_steps and self.step % cfg.save_steps == 0 and self.step < self.total_steps:
                self.save_checkpoint()
        bar.close()
        wall = time.perf_counter() - started
        summary = {
            "steps": self.step,
            "epochs_started": self.sampler.epoch + (self.sampler.position > 0),
            "examples": len(self.dataset),
            "skipped_lines": dict(self.dataset.skipped),
            "wall_seconds": round(wall, 2),
            "tokens_per_second": round(tokens_total / max(wall, 1e-9), 1),
            "world_size": self.world,
            "bf16": self.use_bf16,
            "fp16": cfg.fp16,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "kd_loss": cfg.kd_loss,
            "teacher_temperature": self.teacher_temperature,
            "examples_left_out_per_epoch": self.sampler.dropped,
        }
        if self.rank == 0:
            self.model.save_pretrained(self.out)
            cfg.save(self.out / "train_config.yaml")
            (self.out / "train_summary.json").write_text(json.dumps(summary, indent=2))
            for cb in self.callbacks:
                cb.on_train_end(summary)
        if is_distributed():
            dist.barrier()
        return summary

    def _log(self, window: dict[str, list[float]]) -> None:
        metrics = {
            k: float(np.mean(v))
            for k, v in window.items()
            if k not in ("tokens", "padded_tokens", "step_time")
        }
        if is_distributed():
            t = torch.tensor(list(metrics.values()), dtype=torch.float64)
            dist.all_reduce(t)
            metrics = dict(zip(metrics, (t / self.world).tolist(), strict=True))
        time_sum = sum(window["step_time"])
        metrics["tokens_per_second"] = sum(window["tokens"]) * self.world / max(time_sum, 1e-9)
        metrics["padding_fraction"] = 1 - sum(window["tokens"]) / max(sum(window["padded_tokens"]), 1)
        metrics["step_time"] = time_sum / len(window["step_time"])
        metrics["learning_rate"] = self.scheduler.get_last_lr()[0]
        if self.rank == 0:
            logger.info("step %d: %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            for cb in self.callbacks:
                cb.on_log(self.step, metrics)
