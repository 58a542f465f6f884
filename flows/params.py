"""Typed flow parameters (pydantic): the Prefect UI renders them as forms; defaults are the embedded default."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class MineParams(BaseModel):
    """Which real data to mine into the warehouse."""

    enabled: bool = Field(True, description="off: use the warehouse as it is")
    gettext: bool = Field(True, description="gettext catalogs (translation pairs)")
    gettext_globs: list[str] = Field(default_factory=lambda: ["/usr/share/locale/*/LC_MESSAGES/*.mo"])
    max_catalogs_per_language: int | None = Field(
        2, ge=1, description="sample catalogs per language (None: all)"
    )
    manpages: bool = Field(True, description="translated man pages (long documents, title→body pairs)")
    manpage_root: str = "/usr/share/man"
    manpage_languages: list[str] = Field(default_factory=list, description="empty: every installed language")
    max_per_language: int | None = Field(
        400, ge=1, description="new pairs per source and language (None: all)"
    )
    jsonl: list[str] = Field(default_factory=list, description="extra JSONL files of pairs or documents")
    workers: int = Field(2, ge=1)


class SynthParams(BaseModel):
    """Synthetic queries for long documents from an OpenAI-compatible LLM (a local llama.cpp server by default)."""

    enabled: bool = True
    local_server: bool = Field(True, description="start the local llama.cpp server; off: use base_url/model")
    local_model: str | None = Field(
        None,
        description="GGUF model of the local server (None: synth's default, chosen by measured acceptance)",
    )
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint when local_server is off")
    model: str | None = None
    api_key_secret: str | None = Field(None, description="name of a Prefect Secret block holding the API key")
    # The default local model (SmolLM2-135M) was measured to accept 67% in en/es, 33% in fr and 0% in de/ru/ja/zh:
    # asking it in other languages only spends time. With a real endpoint, set languages=[] (all).
    languages: list[str] = Field(
        default_factory=lambda: ["en", "es", "fr"], description="empty: every language with long documents"
    )
    per_language: int = Field(4, ge=1, description="documents per language")
    max_requests: int = Field(24, ge=1, description="cap on LLM requests this run")


class NegativesParams(BaseModel):
    """Hard negatives mined with an interim model (the current champion, else the base model)."""

    mode: Literal["dense", "hybrid"] = "dense"
    rank_start: int = Field(2, ge=1)
    rank_end: int = Field(60, ge=2)
    num_negatives: int = Field(3, ge=1)
    interim_alias: str | None = Field(
        "champion", description="registry alias of the interim model; None: the base model"
    )


class TrainParams(BaseModel):
    """Self-distillation training (m3core.train.TrainConfig fields; see that class for every knob)."""

    base_model: str | None = Field(
        None, description="model dir or Hub id; None: build a small model from scratch"
    )
    hidden_size: int = Field(128, description="from-scratch model: hidden size")
    num_layers: int = Field(2, description="from-scratch model: layers")
    vocab_size: int = Field(8000, description="from-scratch model: tokenizer vocabulary")
    max_steps: int = Field(150, ge=1)
    learning_rate: float = Field(2e-4, gt=0, description="encoder learning rate")
    # Fresh heads learn faster than the encoder may move: a drifting encoder under a high LR pushed every
    # token's sparse logit below zero (dead ReLU, empty lexical weights) in a measured 20-step run at 5e-4.
    head_learning_rate: float = Field(1e-3, gt=0)
    group_size: int = Field(4, ge=1)
    tokens_per_batch: int = Field(16384, gt=0)
    max_batch_size: int = Field(32, ge=1)
    passage_max_length: int = Field(256, gt=2)
    query_max_length: int = Field(48, gt=2)
    temperature: float = Field(0.05, gt=0)
    self_distill_start_step: int = Field(30, ge=0)
    extra: dict = Field(default_factory=dict, description="any other TrainConfig field")
    torchrun_nproc: int | None = Field(None, ge=1, description="launch torchrun with N processes (GPUs)")


class EvalParams(BaseModel):
    max_queries: int | None = Field(100, description="queries per eval set")
    languages: list[str] = Field(default_factory=list)
    modes: list[str] = Field(default_factory=lambda: ["dense", "sparse", "colbert", "dense+sparse", "all"])


class RegisterParams(BaseModel):
    model_name: str = "m3"
    metric: str = Field(
        "average.all.ndcg@10", description="promotion metric: dotted path into the eval report"
    )
    min_improvement: float = 0.0


class RetrainParams(BaseModel):
    """The whole retrain: mine → synthesize → export → negatives → train → evaluate → register."""

    run_name: str | None = Field(None, description="working-directory name (default: a timestamp)")
    mine: MineParams = Field(default_factory=MineParams)
    synth: SynthParams = Field(default_factory=SynthParams)
    negatives: NegativesParams = Field(default_factory=NegativesParams)
    train: TrainParams = Field(default_factory=TrainParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    registry: RegisterParams = Field(default_factory=RegisterParams)
    train_languages: list[str] = Field(default_factory=list, description="empty: all")
    max_train_per_language: int | None = Field(150, description="training queries per kind and language")
