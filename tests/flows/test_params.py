"""Every typed configuration a user writes rejects an unknown key, naming it (a typo must never be ignored)."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel, ValidationError

import flows.params
from m3core.builder import ScratchShape
from m3core.data.sources.spec import SourcesSpec
from m3core.negatives import NegativesConfig
from m3core.train import TrainConfig
from m3core.train.recipes import TrainOverrides
from synth.config import SynthConfig

FLOW_PARAMS = [
    obj
    for _, obj in inspect.getmembers(flows.params, inspect.isclass)
    if issubclass(obj, BaseModel) and obj.__module__ == "flows.params"
]
LIBRARY = [SourcesSpec, NegativesConfig, ScratchShape, TrainOverrides, SynthConfig]


@pytest.mark.parametrize("model", FLOW_PARAMS + LIBRARY, ids=lambda m: m.__name__)
def test_unknown_keys_are_errors_naming_the_key(model):
    with pytest.raises(ValidationError, match="max_reqests"):
        model.model_validate({"max_reqests": 1})


def test_nested_library_types_too():
    with pytest.raises(ValidationError, match="min_tokns"):
        flows.params.RetrainParams.model_validate({"long": {"documents": {"min_tokns": 5}}})


def test_the_documented_long_parameter_set_validates():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / "retrain-long.json"
    params = flows.params.RetrainParams.model_validate_json(path.read_text())
    assert params.long.enabled and params.long.overrides.passage_max_length == 8192


def test_train_config_too():
    with pytest.raises(ValidationError, match="lerning_rate"):
        TrainConfig(model="m", output_dir="o", train_data=["t"], lerning_rate=1e-4)


def test_every_flow_params_model_is_covered():
    names = {m.__name__ for m in FLOW_PARAMS}
    assert {"MineParams", "SynthParams", "NegativesParams", "TrainParams", "EvalParams"} <= names
    assert {"RegisterParams", "RetrainParams"} <= names
