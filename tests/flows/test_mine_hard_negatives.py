"""Flow `mine_hard_negatives` under a real temporary Prefect API: its parameters are the library's
`NegativesConfig` (margins and rescoring included), and its summary counts the candidates the margins dropped;
with `pool_shards` the pool is encoded by the `encode_corpus` flow on a local Dask cluster (2 worker processes)
and mining gives the negatives it gives encoding the pool itself."""

from __future__ import annotations

import json

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
    config = params.config()
    assert config == NegativesConfig(**params.model_dump(exclude={"interim_alias", "pool_shards", "dask_address",
                                                                  "dask_workers"}))  # fmt: skip
    want = mine_negatives(tiny_embedder, read_examples(train), None, config)
    assert summary["margin_dropped"] == want.n_margin_dropped > 0
    assert summary["examples"] == len(raw)
    assert [e.neg for e in read_examples(out)] == [e.neg for e in want.examples]


def test_pool_encoded_in_shards_on_dask_gives_the_same_negatives(harness, tiny_model_dir, tmp_path):
    from flows.mine_hard_negatives import mine_hard_negatives
    from flows.params import NegativesParams
    from m3core.negatives import Example, read_examples, write_jsonl
    from m3core.retrieval.corpus import Embeddings

    raw = textgen.retrieval_pairs(16, seed=9)
    train = write_jsonl(
        [Example(query=e["query"], pos=e["pos"], neg=e["neg"]) for e in raw], tmp_path / "train.jsonl"
    )
    params = NegativesParams(interim_alias=None, rank_range=(1, 30), num_negatives=3, teacher_scores=True)
    plain = mine_hard_negatives(str(train), str(tmp_path / "plain.jsonl"), str(tiny_model_dir), params)
    sharded_params = params.model_copy(update={"pool_shards": 3, "dask_workers": 2})
    sharded = mine_hard_negatives(
        str(train), str(tmp_path / "sharded.jsonl"), str(tiny_model_dir), sharded_params
    )

    merged = Embeddings.load(tmp_path / "sharded-pool" / "embeddings" / "merged")
    assert merged.meta["shards"] == 3 and len(merged) == plain["pool"] == sharded["pool"]
    assert merged.outputs == (
        "dense",
        "sparse",
        "colbert",
    )  # teacher scores need all three (the model's weights)
    a, b = read_examples(tmp_path / "plain.jsonl"), read_examples(tmp_path / "sharded.jsonl")
    assert [e.neg for e in a] == [e.neg for e in b] and [e.neg_ranks for e in a] == [e.neg_ranks for e in b]
    lines = [
        [json.loads(x) for x in (tmp_path / f).read_text().splitlines()]
        for f in ("plain.jsonl", "sharded.jsonl")
    ]
    for x, y in zip(*lines, strict=True):  # the teacher scores (read_examples drops them)
        assert x["pos_scores"] + x["neg_scores"] == pytest.approx(y["pos_scores"] + y["neg_scores"], abs=1e-5)
