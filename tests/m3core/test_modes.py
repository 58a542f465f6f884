"""One vocabulary: the outputs, the retrieval modes, the hybrid presets and FlagEmbedding's keys, defined once in
`m3core.modes` and only imported elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from m3core import modes
from m3core.modes import (
    FLAG_SCORE_KEYS,
    HYBRID_PRESETS,
    MODE_OF_FLAG_KEY,
    MODE_OUTPUTS,
    MODES,
    OUTPUTS,
    SINGLE_MODES,
    outputs_for,
)
from tests.support import REPO_ROOT

ROOT = REPO_ROOT


def test_outputs_and_modes_are_distinct_concepts():
    assert OUTPUTS == ("dense", "sparse", "colbert")
    assert SINGLE_MODES == OUTPUTS and set(OUTPUTS) < set(MODES)
    assert MODES[-2:] == ("dense+sparse", "all") and not {"dense+sparse", "all"} & set(OUTPUTS)
    assert tuple(MODE_OUTPUTS) == MODES  # every mode says what it needs, in MODES order
    assert all(set(need) <= set(OUTPUTS) for need in MODE_OUTPUTS.values())
    assert outputs_for(["colbert"]) == ("dense", "colbert") and outputs_for(list(MODES)) == OUTPUTS
    with pytest.raises(ValueError, match="unknown retrieval mode"):
        outputs_for(["dense", "splade"])


def test_flagembedding_keys_are_translated_in_one_place():
    assert set(FLAG_SCORE_KEYS) == set(MODES)
    assert (
        FLAG_SCORE_KEYS["dense+sparse"] == "sparse+dense" and FLAG_SCORE_KEYS["all"] == "colbert+sparse+dense"
    )
    assert all(FLAG_SCORE_KEYS[m] == m for m in SINGLE_MODES)
    assert {MODE_OF_FLAG_KEY[k] for k in FLAG_SCORE_KEYS.values()} == set(MODES)
    from m3core.embedder import SCORE_KEYS

    assert SCORE_KEYS == ("colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense")


def test_every_old_name_is_the_one_definition():
    from m3core import retrieval, scoring
    from m3core.evaluation import weights
    from m3core.evaluation.evaluate import EvalConfig
    from m3core.retrieval import corpus, hybrid, retriever
    from m3core.train import TrainConfig
    from registry import promotion

    assert hybrid.PRESETS is HYBRID_PRESETS and retrieval.PRESETS is HYBRID_PRESETS
    assert scoring.HYBRID_WEIGHTS_SHORT is HYBRID_PRESETS["short"]
    assert scoring.HYBRID_WEIGHTS_LONG is HYBRID_PRESETS["long"]
    assert weights.PAPER_SHORT is HYBRID_PRESETS["short"]
    assert hybrid.resolve_weights("long") is HYBRID_PRESETS["long"]
    assert retrieval.MODES is retriever.MODES is MODES and promotion.WITH_HEADS is MODES
    assert retriever.outputs_for is retrieval.outputs_for is outputs_for
    assert retriever.MODE_OUTPUTS is MODE_OUTPUTS and corpus.OUTPUTS is OUTPUTS
    assert EvalConfig().modes is MODES
    assert TrainConfig(model="m", output_dir="o", train_data=["t"]).modes == list(OUTPUTS)


# A tuple/list or Literal spelling two or more output/mode names, or FlagEmbedding's hybrid keys, in quotes.
# (bench/encode.py's `("dense", "all")` cases name what to encode — dense only or everything — not modes.)
SPELLED = re.compile(
    r"""[(\[]\s*"(dense|sparse|colbert)",\s*"(dense|sparse|colbert|dense\+sparse)"|"(colbert\+)?sparse\+dense\""""
)


@pytest.mark.parametrize("package", ["m3core", "synth", "registry", "flows", "bench"])
def test_no_module_spells_the_vocabulary_again(package):
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != Path(modes.__file__)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SPELLED.search(line)
    ]
    assert not found, "import these from m3core.modes:\n" + "\n".join(found)
