"""Training recipes: the hyper-parameters that fit a starting point, as typed, named presets.

A pretrained encoder and a randomly initialised one need different settings, and one set of defaults cannot
serve both: a pretrained encoder forgets what made it good under a from-scratch learning rate (measured: 2e-4
is ten times what multilingual-e5-small survives), while a random 2-layer model barely moves at 3e-5.

- `finetune` — a pretrained backbone (multilingual-e5-small, XLM-R, BGE-M3): encoder LR 3e-5 (the 1e-5–5e-5
  range of the reference and the paper), fresh heads at a higher LR (they start from random), InfoNCE
  temperature 0.02 (BGE-M3's), self-distillation after a warm-up of the fresh heads, with a softer teacher
  (T = 0.1, see `m3core.train.losses`).
- `scratch` — a small model built from scratch (tests, pipeline checks): encoder LR 2e-4, head LR 1e-3,
  temperature 0.05 (the values the embedded default used before it had a backbone).

`TrainOverrides` is the all-optional view of `TrainConfig` the flows expose: a field left None takes the
recipe's value, then `TrainConfig`'s own default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from m3core.train.config import TrainConfig

RecipeName = Literal["finetune", "scratch"]


class Recipe(BaseModel):
    """The `TrainConfig` values a recipe sets (every other field keeps `TrainConfig`'s default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RecipeName
    why: str
    learning_rate: float = Field(gt=0)
    head_learning_rate: float = Field(gt=0)
    temperature: float = Field(gt=0)
    warmup_ratio: float = Field(ge=0, le=1)
    self_distill_start_step: int = Field(ge=0)
    self_distill_temperature: float | None = Field(None, gt=0)
    self_distill_weights: tuple[float, float, float] | None = None
    group_size: int = Field(ge=1)
    query_max_length: int = Field(gt=2)
    passage_max_length: int = Field(gt=2)

    def config_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"name", "why"})


RECIPES: dict[str, Recipe] = {
    "finetune": Recipe(
        name="finetune",
        why="pretrained encoder: small encoder LR so it keeps what it knows; fresh heads learn faster",
        learning_rate=3e-5,
        head_learning_rate=5e-4,
        temperature=0.02,
        warmup_ratio=0.1,
        self_distill_start_step=20,
        # Measured on the embedded default (60 steps, held-out man-page sets, SD on vs off): at T = τ = 0.02 the
        # ensemble teacher is nearly one-hot and self-distillation changed nothing (sparse 43.8 vs 43.8
        # monolingual); at T = 0.1 ColBERT +1.3 mono / +4.4 cross-lingual, sparse +2.3 mono.
        self_distill_temperature=0.1,
        # The sparse head learns from the teacher as much as the other heads do (λ'_sparse 1, L keeps 0.1):
        # measured the same way, sparse +3.3 [+1.4, +5.5] monolingual over no self-distillation (+4.1 over
        # λ'_sparse 0.1), `all` +1.0 / −0.7 (intervals spanning 0), dense and ColBERT within ±1.
        self_distill_weights=(1.0, 1.0, 1.0),
        group_size=4,
        query_max_length=48,
        passage_max_length=256,
    ),
    "scratch": Recipe(
        name="scratch",
        why="random small model: a high LR moves it in few steps; the head LR stays below the dead-ReLU point",
        learning_rate=2e-4,
        # A drifting encoder under a higher head LR pushed every token's sparse logit below zero (dead ReLU,
        # empty lexical weights) in a measured 20-step run at 5e-4 encoder LR.
        head_learning_rate=1e-3,
        temperature=0.05,
        warmup_ratio=0.1,
        self_distill_start_step=30,
        group_size=4,
        query_max_length=48,
        passage_max_length=256,
    ),
}

# Fields a run's caller always sets itself (where the model and data are), never a recipe or an override.
_RUN_FIELDS = ("model", "output_dir", "train_data")

TrainOverrides = create_model(  # the all-optional view of TrainConfig (Prefect renders it as a form)
    "TrainOverrides",
    __config__=ConfigDict(extra="forbid"),
    __doc__="TrainConfig fields to override (None: the recipe's value, else TrainConfig's default).",
    **{
        name: (field.annotation | None, Field(None, description=field.description))
        for name, field in TrainConfig.model_fields.items()
        if name not in _RUN_FIELDS
    },
)


def recipe_for(backbone: str) -> RecipeName:
    """`scratch` for a model built from scratch, `finetune` for anything pretrained.

    >>> recipe_for("scratch"), recipe_for("multilingual-e5-small")
    ('scratch', 'finetune')
    """
    return "scratch" if backbone == "scratch" else "finetune"


def build_train_config(
    recipe: RecipeName, model: str, output_dir: str, train_data: list[str], overrides: BaseModel | None = None
) -> TrainConfig:
    """`TrainConfig` = TrainConfig defaults ← the recipe ← the overrides that are set."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {sorted(RECIPES)}")
    fields = RECIPES[recipe].config_fields()
    if overrides is not None:
        fields.update(overrides.model_dump(exclude_none=True))
    return TrainConfig(model=model, output_dir=output_dir, train_data=train_data, **fields)
