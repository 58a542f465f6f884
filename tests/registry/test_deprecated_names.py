"""Public names that moved keep working for one release, with a DeprecationWarning that names the new place."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("registry.pyfunc", "registry.log_model", "log_m3_model"),
        ("registry.m3_pyfunc", "registry.pyfunc_model", "M3PyFunc"),
    ],
)
def test_moved_registry_modules_warn_and_are_the_same(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_renamed_library_names():
    from flows.params import ScratchModelParams
    from m3core import negatives
    from m3core.builder import ScratchShape

    assert negatives.MiningConfig is negatives.NegativesConfig
    assert ScratchModelParams is ScratchShape
    with (
        pytest.warns(DeprecationWarning, match="mine_negatives"),
        pytest.raises(ValueError, match="no examples"),
    ):
        negatives.mine(None, [])


def test_retrain_quick_alias_warns():
    from flows.params import RetrainParams
    from flows.retrain import quick

    with pytest.warns(DeprecationWarning, match=r"RetrainParams\.quick"):
        p = quick(RetrainParams())
    assert p == RetrainParams().quick()
