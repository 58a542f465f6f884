"""Flow `mine_hard_negatives` under a real temporary Prefect API: its parameters are the library's
`NegativesConfig` (margins and rescoring included), and its summary counts the candidates the margins dropped."""

from __future__ import annotations

import pytest

from tests.support import textgen
from tests.support.procs import platform_home


@pytest.fixture(scope="module")
def harness(tmp_path_factory, prefect_server):
    with platform_home(tmp_path_factory.mktemp("m3home-negatives")) as home:
        yield home


def test_margins_reach_the_miner_and_its_summary(harness, tiny_model_dir, tiny_embedder, tmp_path):
    from flows.mine_hard_negatives import mine_hard_negatives
    from flows.params import NegativesParams
    from m3core.negatives import Example, NegativesConfig, mine_negatives, read_examples, write_jsonl

    raw = textgen.retrieval_pairs(16, seed=5)
    train = write_jsonl(
        [Example(query=e["query"], pos=e["pos"], neg=e["neg"]) for e in raw], tmp_path / "train.jsonl"
    )
    out = tmp_path / "negatives.jsonl"
    params = NegativesParams(
        interim_alias=None, rank_range=(1, 30), num_negatives=2, relative_margin=0.05, rescore="hybrid"
    )
    summary = mine_hard_negatives(str(train), str(out), str(tiny_model_dir), params)

    # The library on the same input (the pool: the file's own passages) with the same configuration.
    config = NegativesConfig(**params.model_dump(exclude={"interim_alias"}))
    want = mine_negatives(tiny_embedder, read_examples(train), None, config)
    assert summary["margin_dropped"] == want.n_margin_dropped > 0
    assert summary["examples"] == len(raw)
    assert [e.neg for e in read_examples(out)] == [e.neg for e in want.examples]
