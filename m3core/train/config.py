"""`TrainConfig`: every knob of a training run, typed, loaded from YAML/JSON, saved with each checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from m3core.modes import OUTPUTS, Output
from m3core.train.bucket_sampler import DEFAULT_EDGES

# The knowledge-distillation losses (`m3core.train.losses`); here so that a config is read without torch.
KdLoss = Literal["none", "kl_div", "m3_kd_loss"]


class TrainConfig(BaseModel):
    """A training run. Paths are strings so the config round-trips through YAML/JSON unchanged."""

    model_config = ConfigDict(extra="forbid")

    # model and data
    model: str = Field(description="model directory or Hub id (an M3 model or a plain encoder: fresh heads)")
    output_dir: str
    train_data: list[str] = Field(description="FlagEmbedding JSONL files or directories")
    skip_bad_lines: bool = False
    pooling: Literal["cls", "mean"] | None = Field(None, description="override the model's pooling")
    extend_positions_to: int | None = Field(
        None, description="grow the position table to this many tokens first"
    )
    attention_dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="dropout on the attention probabilities while training; None: the backbone's (XLM-R: 0.1). "
        "0 lets SDPA use its fused kernel on long inputs (M3Model.set_attention_dropout: measured 2.5x faster, "
        "20x less memory at 2048 tokens on CPU)",
    )
    query_instruction: str | None = Field(
        None, description="prefix for queries; None: the model's profile (e5: 'query: '); '' for none"
    )
    passage_instruction: str | None = Field(
        None, description="prefix for passages; None: the model's profile (e5: 'passage: '); '' for none"
    )
    group_size: int = Field(8, ge=1)
    flagembedding_types: bool = Field(
        True,
        description="FlagEmbedding's per-type rules: only_1neg groups of 2, symmetric_class min(negatives+1, G), "
        "the query prompt on symmetric_sts/symmetric_clustering passages (see m3core.train.data)",
    )
    query_max_length: int = Field(64, gt=2)
    passage_max_length: int = Field(512, gt=2)

    # objective (see m3core.train.losses)
    modes: list[Output] = Field(default_factory=lambda: list(OUTPUTS))
    temperature: float = Field(0.02, gt=0)
    ensemble_weights: tuple[float, float, float] = (1.0, 0.3, 1.0)
    mode_weights: tuple[float, float, float] = (1.0, 0.1, 1.0)
    self_distill: bool = True
    self_distill_start_step: int = Field(0, ge=0)
    kd_loss: KdLoss = Field(
        "none",
        description="distil from the data's pos_scores/neg_scores: none (they are not used), kl_div, or "
        "m3_kd_loss (BGE-M3's); see m3core.train.losses",
    )
    teacher_temperature: float | Literal["auto"] = Field(
        "auto",
        description="softmax temperature of teacher scores; auto: `temperature` when they are similarities (median "
        "spread within a group < 1, e.g. the miner's hybrid scores), else 1 (reranker logits, FlagEmbedding's)",
    )
    self_distill_weights: tuple[float, float, float] | None = Field(
        None, description="weights of the self-distillation terms per mode; None: mode_weights"
    )
    self_distill_temperature: float | None = Field(
        None, gt=0, description="T of the self-distillation softmaxes; None: temperature (the paper's)"
    )
    frozen: list[Literal["encoder", "sparse", "colbert"]] = Field(default_factory=list)

    # batching
    sampler: Literal["length_bucket", "random"] = "length_bucket"
    bucket_edges: list[int] = Field(default_factory=lambda: list(DEFAULT_EDGES))
    tokens_per_batch: int = Field(
        32768, gt=0, description="tokens per rank per step: padded passages (G × bucket edge) plus the query"
    )
    max_batch_size: int = Field(64, ge=1)
    batch_size: int = Field(8, ge=1, description="examples per rank per step for the random sampler")
    sub_batch_size: int | None = Field(
        None, ge=1, description="split-batch: encode this many texts at a time"
    )
    activation_checkpointing: bool | None = Field(None, description="default: on when sub_batch_size is set")
    cross_device: Literal["none", "dense", "all"] = Field(
        "dense",
        description="negatives from the other ranks: none, dense (the dense loss only, FlagEmbedding's), all modes. "
        "The gradient is exactly a single process's on the whole batch (FlagEmbedding's dense one is 1/world of it)",
    )
    same_dataset_within_batch: bool = Field(
        False, description="every batch from one training file (FlagEmbedding's same_dataset_within_batch)"
    )
    drop_last: bool = Field(
        False, description="drop each bucket's incomplete last batch (FlagEmbedding's dataloader_drop_last)"
    )

    # optimization
    learning_rate: float = Field(1e-5, gt=0)
    head_learning_rate: float | None = Field(None, gt=0, description="default: learning_rate")
    sparse_head_learning_rate: float | None = Field(
        None, gt=0, description="the sparse head's (one Linear(hidden, 1)); default: head_learning_rate"
    )
    weight_decay: float = 0.01
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    max_grad_norm: float | None = 1.0
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="batches per optimizer step (their losses averaged; a step is an optimizer step)"
    )
    seed: int = 42
    bf16: Literal["auto", "on", "off"] = Field(
        "auto", description="bf16 autocast: auto (on a GPU that supports it), on (also on CPU), off"
    )
    fp16: bool = Field(
        False, description="fp16 autocast with a dynamic loss scaler (GPU, or CPU); excludes bf16: on"
    )

    # bookkeeping
    logging_steps: int = Field(10, ge=1)
    save_steps: int | None = Field(None, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    report_to: list[str] = Field(
        default_factory=list, description="reporters (entry points `m3.reporters`, e.g. mlflow from registry)"
    )
    show_progress: bool = True

    @field_validator("report_to")
    @classmethod
    def _reporters(cls, v: list[str]) -> list[str]:
        from m3core.train.callbacks import REPORTER_GROUP, installed_reporters

        installed = installed_reporters()
        unknown = [name for name in v if name not in installed]
        if unknown:
            known = ", ".join(sorted(installed)) or "none installed"
            raise ValueError(f"report_to: unknown {unknown} (group {REPORTER_GROUP}: {known})")
        return v

    @field_validator("bucket_edges")
    @classmethod
    def _edges(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or v != sorted(set(v)) or v[0] < 0:
            raise ValueError(f"bucket_edges must be increasing non-negative token counts, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if not self.modes:
            raise ValueError("modes must name at least one of dense, sparse, colbert")
        if self.fp16 and self.bf16 == "on":
            raise ValueError("fp16 and bf16: on exclude each other (set bf16: off or auto with fp16)")
        if "encoder" in self.frozen and all(m in self.frozen or m == "dense" for m in self.modes):
            raise ValueError("nothing to train: the encoder is frozen and no trained head is left unfrozen")
        return self

    @property
    def use_checkpointing(self) -> bool:
        return (
            self.sub_batch_size is not None
            if self.activation_checkpointing is None
            else self.activation_checkpointing
        )

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        text = path.read_text()
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        try:
            return cls(**raw)
        except Exception as err:
            raise ValueError(f"{path}: {err}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(
            yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        )
