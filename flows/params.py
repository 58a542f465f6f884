"""Typed flow parameters (pydantic): the Prefect UI renders them as forms; defaults are the embedded default."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from m3core.builder import ScratchShape
from m3core.data.long_documents import LongDocSpec
from m3core.data.records import PairKind
from m3core.data.sources.spec import SourcesSpec
from m3core.modes import MODES, Mode
from m3core.negatives import NegativesConfig
from m3core.train.recipes import TrainOverrides, recipe_for
from synth.config import BudgetConfig, SelectionConfig, SynthConfig

EMBEDDED_LANGUAGES = ("en", "de", "fr", "es", "ru", "ja", "zh-CN", "pl")


class MineParams(SourcesSpec):
    """Which real data to mine into the warehouse: the library's `SourcesSpec` (what `m3 mine` flags set), with
    the embedded default's choices, plus the run's switches."""

    enabled: bool = Field(True, description="off: use the warehouse as it is")
    workers: int = Field(2, ge=1)
    shards: bool = Field(
        False,
        description="mine each source unit as a task on a Dask cluster into a Parquet shard (skipped when "
        "unchanged), then ingest the shards; off: one process with `workers` worker processes",
    )
    shard_root: str | None = Field(
        None, description="shard directory or fsspec URL (None: $M3_HOME/shards); shared by a remote cluster"
    )
    dask_address: str | None = Field(
        None, description="an existing Dask scheduler, e.g. tcp://scheduler:8786 (None: a local cluster)"
    )
    dask_workers: int = Field(2, ge=1, description="worker processes of the local Dask cluster")
    gettext: bool = Field(True, description="gettext catalogs (translation pairs)")
    max_catalogs_per_language: int | None = Field(
        2, ge=1, description="sample catalogs per language (None: all)"
    )
    manpages: bool = Field(True, description="translated man pages (long documents, title→body pairs)")
    # The embedded default: eight languages of several scripts whose man pages Debian ships in numbers, so the
    # held-out sets (monolingual and X→en) have enough queries, and every evaluation corpus is encoded whole
    # within the run's time budget on two cores. Empty: every installed language.
    manpage_languages: list[str] = Field(
        default_factory=lambda: list(EMBEDDED_LANGUAGES), description="empty: every installed language"
    )
    max_per_language: int | None = Field(
        300, ge=1, description="new pairs per source and language pair (None: all)"
    )

    def sources(self) -> SourcesSpec:
        """The library spec alone (without the run's switches)."""
        switches = {"enabled", "workers", "shards", "shard_root", "dask_address", "dask_workers"}
        return SourcesSpec(**self.model_dump(exclude=switches))


def _embedded_synth() -> SynthConfig:
    # The default local model (SmolLM2-135M) was measured to accept 67% in en/es, 33% in fr and 0% in de/ru/ja/zh:
    # asking it in other languages only spends time. With a real endpoint, set config.selection.languages=[] (all).
    return SynthConfig(
        selection=SelectionConfig(languages=["en", "es", "fr"], per_language=4, source="manpages"),
        budget=BudgetConfig(max_requests=24),
    )


class SynthParams(BaseModel):
    """Synthetic queries for long documents: the library's `SynthConfig` (what `m3 synth generate --config`
    reads), run against a local llama.cpp server by default or against `config.endpoint`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    local_server: bool = Field(True, description="start the local llama.cpp server; off: use config.endpoint")
    local_model: str | None = Field(
        None,
        description="GGUF model of the local server (None: synth's default, chosen by measured acceptance)",
    )
    api_key_secret: str | None = Field(None, description="name of a Prefect Secret block holding the API key")
    on_failed_requests: Literal["warn", "fail"] = Field(
        "warn", description="requests that failed after their retries: warn and go on, or fail the task"
    )
    config: SynthConfig = Field(default_factory=_embedded_synth)


class NegativesParams(NegativesConfig):
    """Hard negatives mined with an interim model: the library's `NegativesConfig` (what `m3 negatives` flags
    set) with the embedded default's window, plus which registry alias is the interim model and whether the
    pool is encoded in shards on a Dask cluster (the `encode_corpus` flow) before mining."""

    rank_range: tuple[int, int] = (2, 60)
    num_negatives: int = Field(3, ge=1)
    interim_alias: str | None = Field(
        "champion", description="registry alias of the interim model (the champion); None: the base model"
    )
    pool_shards: int = Field(
        0, ge=0, description="encode the pool in this many shard tasks on Dask; 0: in the mining task"
    )
    dask_address: str | None = Field(
        None, description="with pool_shards: an existing Dask scheduler (None: a local cluster)"
    )
    dask_workers: int = Field(2, ge=1, description="with pool_shards: worker processes of the local cluster")

    def config(self) -> NegativesConfig:
        """The library config alone (without the run's switches)."""
        return NegativesConfig(**self.model_dump(include=set(NegativesConfig.model_fields)))


# Deprecated name (one release): the scratch shape is the library's own type.
ScratchModelParams = ScratchShape


def _embedded_overrides() -> TrainOverrides:
    # The embedded default's budget on 2 CPU cores (the recipe sets learning rates, temperature, lengths).
    # 128-token passages: measured on the held-out man-page sets, e5-small zero-shot reads the man pages' first
    # paragraphs better than 256 tokens (dense nDCG@10 79.3 vs 76.7 monolingual) at half the cost.
    return TrainOverrides(max_steps=60, tokens_per_batch=3072, max_batch_size=8, passage_max_length=128)


class TrainParams(BaseModel):
    """Self-distillation training: a backbone, the recipe that fits it, and typed overrides of its values."""

    model_config = ConfigDict(extra="forbid")

    backbone: str = Field(
        "multilingual-e5-small",
        description="a known backbone (`m3 backbone list`), a model directory, a Hub id, or 'scratch'",
    )
    recipe: Literal["auto", "finetune", "scratch"] = Field(
        "auto", description="auto: scratch for backbone 'scratch', finetune for anything pretrained"
    )
    scratch: ScratchShape = Field(default_factory=ScratchShape)
    overrides: TrainOverrides = Field(  # type: ignore[valid-type]
        default_factory=_embedded_overrides, description="TrainConfig fields over the recipe's values"
    )
    torchrun_nproc: int | None = Field(None, ge=1, description="launch torchrun with N processes (GPUs)")

    @property
    def recipe_name(self) -> str:
        return recipe_for(self.backbone) if self.recipe == "auto" else self.recipe


def _stage1_overrides() -> TrainOverrides:
    # Dense only (the paper's stage 1: weakly supervised pairs, no sparse/ColBERT yet), short texts (translation
    # pairs are UI strings), and a larger batch than stage 2 for more in-batch negatives on 2 CPU cores.
    return TrainOverrides(
        modes=["dense"], self_distill=False, max_steps=60, group_size=2, tokens_per_batch=4096, max_batch_size=32,
        query_max_length=32, passage_max_length=32, bucket_edges=[0, 32],
    )  # fmt: skip


class Stage1Params(BaseModel):
    """Stage 1 of a multi-stage retrain (off by default): the paper's weak-supervision pass — dense only, on the
    mined translation pairs (gettext), at a large batch — trained from the backbone; stage 2 (the `train`
    parameters: unified self-distillation on query→passage pairs) then starts from its weights."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="train stage 1 before stage 2")
    kinds: list[PairKind] = Field(
        default_factory=lambda: ["translation"], description="warehouse pair kinds stage 1 trains on"
    )
    max_per_language: int | None = Field(
        2000, ge=1, description="stage-1 queries per kind and language pair (None: all)"
    )
    overrides: TrainOverrides = Field(  # type: ignore[valid-type]
        default_factory=_stage1_overrides, description="TrainConfig fields over the recipe's values"
    )


class EvalParams(BaseModel):
    """Evaluation on the held-out split (full corpora); the same lengths for every model compared."""

    model_config = ConfigDict(extra="forbid")

    max_queries: int | None = Field(100, description="queries per eval set")
    languages: list[str] = Field(default_factory=list)
    modes: list[Mode] = Field(default_factory=lambda: list(MODES))
    query_max_length: int | None = Field(48, description="None: each model's own")
    passage_max_length: int | None = Field(128, description="None: each model's own")
    batch_size: int = Field(32, ge=1)
    choose_weights: bool = Field(
        True, description="choose the hybrid weights on the dev split after training"
    )
    dev_max_queries: int | None = Field(100, description="dev-split queries per set for the weight choice")
    weights: Literal["model", "short", "long"] = Field(
        "model", description="hybrid weights: the model's own (its profile), or the paper's short/long preset"
    )
    mcls: bool = Field(False, description="encode the corpus in MCLS mode (long documents)")


def _long_overrides() -> TrainOverrides:
    # Long buckets up to 8192 tokens with split-batch (one passage per forward, activation checkpointing) so a
    # long batch fits 2 CPU cores' memory; few steps: an 8k-token passage costs minutes per step there. No
    # attention dropout: SDPA's fused kernel then never holds the [heads, L, L] probabilities (M3Model.set_attention_dropout).
    return TrainOverrides(
        max_steps=30, group_size=2, query_max_length=128, passage_max_length=8192, extend_positions_to=8192,
        bucket_edges=[0, 1024, 2048, 4096, 8192], tokens_per_batch=16384, max_batch_size=4, sub_batch_size=1,
        self_distill_start_step=0, warmup_ratio=0.1, attention_dropout=0.0,
    )  # fmt: skip


def _long_eval() -> EvalParams:
    return EvalParams(
        max_queries=None, query_max_length=128, passage_max_length=8192, choose_weights=False, weights="long"
    )


class LongParams(BaseModel):
    """The long-document stage (off by default: hours on 2 CPU cores, minutes on a GPU). After stage 2, the model's
    positions are extended (`overrides.extend_positions_to`, by copying the learned rows), it trains on
    long-document lines (`m3core.data.long_documents`, train split; with `replay_stage2`, mixed with stage 2's
    own lines, each in its length bucket), and it is evaluated on the long-document held-out sets next to the
    base model truncated at its own length, BM25, and itself in MCLS mode. The registered model is then the long-trained one, and the
    short-text held-out evaluation (which decides promotion) reads it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="run the long-document stage")
    documents: LongDocSpec = Field(
        default_factory=LongDocSpec, description="what counts as long; the queries"
    )
    max_train_per_language: int | None = Field(40, ge=1, description="long training lines per language")
    # Measured (README, "Long documents", run (m)): replaying stage 2's lines keeps the short cross-lingual sets
    # closer (all -1.5 instead of -4.1) but gives back the long-document gain (all -0.8 against (b) instead of
    # +2.2), so it is off. A replay run wants a 0-256 bucket and more steps: bucket_edges [0, 256, 1024, 2048],
    # max_batch_size 8, max_steps 48.
    replay_stage2: bool = Field(
        False,
        description="also train on stage 2's lines (short, monolingual and cross-lingual) in the long stage",
    )
    overrides: TrainOverrides = Field(  # type: ignore[valid-type]
        default_factory=_long_overrides, description="TrainConfig fields of the long stage"
    )
    eval: EvalParams = Field(default_factory=_long_eval, description="the long-document evaluation")
    mcls_eval: bool = Field(True, description="also evaluate the long-trained model in MCLS mode")


class RegisterParams(BaseModel):
    """Registration and the promotion policy's metric."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = "m3"
    metric: str = Field(
        "average.all.ndcg@10", description="promotion metric: dotted path into the eval report"
    )
    min_improvement: float = 0.0
    onnx: bool = Field(True, description="log the ONNX export (fp32, int8) with each version; served on CPU")
    retries: int = Field(
        2, ge=0, description="retries of each MLflow task on a transient fault (server down)"
    )
    retry_delay_seconds: list[float] = Field(
        default_factory=lambda: [10.0, 60.0], description="waits before those retries (the last one repeats)"
    )


class RetrainParams(BaseModel):
    """The whole retrain: mine → synthesize → export → negatives → train → evaluate → register."""

    model_config = ConfigDict(extra="forbid")

    run_name: str | None = Field(None, description="working-directory name (default: a timestamp)")
    mine: MineParams = Field(default_factory=MineParams)
    synth: SynthParams = Field(default_factory=SynthParams)
    negatives: NegativesParams = Field(default_factory=NegativesParams)
    stage1: Stage1Params = Field(default_factory=Stage1Params)
    train: TrainParams = Field(default_factory=TrainParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    long: LongParams = Field(default_factory=LongParams)
    registry: RegisterParams = Field(default_factory=RegisterParams)
    train_languages: list[str] = Field(default_factory=list, description="empty: all")
    max_train_per_language: int | None = Field(60, description="training queries per kind and language pair")

    def quick(self) -> RetrainParams:
        """A run of a few minutes (`m3 retrain --quick`): three languages, few steps, few queries (smoke runs)."""
        p = self.model_copy(deep=True)
        p.mine.manpage_languages = p.mine.manpage_languages or ["en", "de", "fr"]
        p.mine.max_catalogs_per_language, p.mine.max_per_language = 1, 120
        p.synth.config.selection.per_language, p.synth.config.budget.max_requests = 1, 4
        p.train.overrides.max_steps, p.train.overrides.self_distill_start_step = 20, 5
        p.eval.max_queries = 30
        p.train_languages = p.train_languages or ["en", "de", "fr"]
        return p
