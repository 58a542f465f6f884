"""Approximate dense indexes for mining at scale: IVF-PQ and HNSW find >= 0.95 of the flat top-100 with the
mining defaults, IVF-PQ trains on a seeded sample and rebuilds identically, mining picks flat or IVF-PQ by pool
size, and searching the queries in shards gives the one-shot negatives."""

from __future__ import annotations

import numpy as np
import pytest

from m3core.negatives import RECALL_GOAL, Example, NegativesConfig, dense_index_config, mine_negatives
from m3core.retrieval.ann_recall import exact_scores, exact_top_k, index_recall, recall_at_k
from m3core.retrieval.dense import DenseIndex, DenseIndexConfig, train_rows
from tests.support import textgen


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered():
    """4000 passages around 40 centres (like real embeddings: uniform random vectors have no structure for
    the k-means cells to use) and 200 queries near some of them; 64 dimensions."""
    rng = np.random.default_rng(3)
    centres = _unit(rng.standard_normal((40, 64)))
    p = _unit(centres[rng.integers(40, size=4000)] + 0.35 * rng.standard_normal((4000, 64)))
    q = _unit(p[rng.choice(4000, 200, replace=False)] + 0.1 * rng.standard_normal((200, 64)))
    return p, q


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_mining_defaults_meet_the_recall_goal(clustered, kind):
    p, q = clustered
    config = dense_index_config(NegativesConfig(index=kind), len(p))
    report = index_recall(p, q, config, k=100)
    assert report.kind == kind and report.n_queries == 200 and report.n_docs == 4000
    assert report.recall >= RECALL_GOAL, f"{kind} recall@100 {report.recall:.3f}"
    # The measure can fail: the same index searched too narrowly misses much of the flat top-100.
    narrow = {"ivfpq": {"ivf_nprobe": 1}, "hnsw": {"hnsw_ef_search": 1}}[kind]
    poor = index_recall(p, q, DenseIndexConfig(**{**vars(config), **narrow}), k=100)
    assert poor.recall < 0.9 and poor.min_recall <= poor.recall


def test_recall_is_measured_against_the_flat_index(clustered):
    p, q = clustered
    flat_scores, flat_ids = DenseIndex.build(p).search(q, 100)
    _, ids = exact_top_k(p, q, 100)
    np.testing.assert_array_equal(ids, flat_ids)
    np.testing.assert_allclose(exact_scores(p, q, ids), flat_scores, atol=1e-5)
    assert index_recall(p, q, DenseIndexConfig(kind="flat")).recall == 1.0
    # A sample of the queries (seeded), as mining checks its index.
    index = DenseIndex.build(p, DenseIndexConfig(kind="ivfpq", ivf_nlist=63))
    a = index_recall(p, q, index, n_queries=50, seed=1)
    assert a.n_queries == 50 and a == index_recall(p, q, index, n_queries=50, seed=1)
    with pytest.raises(ValueError, match="the index holds 4000 vectors, but 10 were given"):
        index_recall(p[:10], q, index)


def test_recall_counts_ties_at_the_kth_score(clustered):
    # Passages with identical vectors (long texts cut to the same first tokens): the flat index ranks the lowest
    # ids of a tied group first; an index returning their twins instead has found just as good passages.
    p, q = clustered
    twins = np.concatenate([p, p])  # passage i and 4000 + i are identical
    kth, ids = exact_top_k(twins, q, 99)  # 49 pairs of twins, and one of the 50th pair at rank 99
    last = ids[:, -1]
    other = np.where(last < 4000, last + 4000, last - 4000)
    assert not any(o in row for o, row in zip(other.tolist(), ids.tolist(), strict=True))
    found = np.concatenate([ids[:, :-1], other[:, None]], axis=1)  # the other twin at rank 99
    assert np.all(recall_at_k(exact_scores(twins, q, found), kth[:, -1], 99) == 1.0)
    # Other passages are misses: the first 10 results replaced by the passages at exact ranks 151-160.
    _, deeper = exact_top_k(p, q, 160)
    worse = np.concatenate([deeper[:, 150:160], deeper[:, 10:100]], axis=1)
    got = recall_at_k(exact_scores(p, q, worse), exact_top_k(p, q, 100)[0][:, -1], 100)
    assert np.all(got == 0.9)


def test_ivfpq_trains_on_a_seeded_sample_and_rebuilds_identically(clustered):
    p, q = clustered
    rows = train_rows(p, 1000, seed=7)
    assert len(rows) == 1000 and np.array_equal(rows, train_rows(p, 1000, seed=7))
    assert not np.array_equal(rows, train_rows(p, 1000, seed=8))
    assert train_rows(p, 0, seed=7) is p and train_rows(p, 10_000, seed=7) is p
    config = DenseIndexConfig(kind="ivfpq", train_sample=1000, seed=7, ivf_nlist=63, ivf_nprobe=8)
    a, b = DenseIndex.build(p, config), DenseIndex.build(p, config)
    np.testing.assert_array_equal(a.search(q, 50)[1], b.search(q, 50)[1])
    # Smaller than the flat index: 8 bytes of PQ code and 64 of 8-bit re-ranking vector, not 256 of float32.
    assert a.nbytes() < DenseIndex.build(p).nbytes() / 2


def test_ivfpq_bad_settings_are_clear_errors():
    p = _unit(np.random.default_rng(0).standard_normal((100, 64)))
    with pytest.raises(ValueError, match="ivfpq: 100 training vectors are fewer than the 256 centroids"):
        DenseIndex.build(p, DenseIndexConfig(kind="ivfpq"))
    with pytest.raises(ValueError, match="pq_m 5 must divide the vector dimension 64"):
        DenseIndex.build(p, DenseIndexConfig(kind="ivfpq", pq_m=5, pq_nbits=4))
    with pytest.raises(ValueError, match="unknown dense index kind 'lsh'"):
        DenseIndex.build(p, DenseIndexConfig(kind="lsh"))  # type: ignore[arg-type]


def test_auto_picks_flat_up_to_the_threshold_then_ivfpq():
    cfg = NegativesConfig(flat_max_pool=500, nprobe=12, train_sample=300, seed=5)
    assert dense_index_config(cfg, 500).kind == "flat"
    big = dense_index_config(cfg, 501)
    assert (big.kind, big.ivf_nprobe, big.train_sample, big.seed, big.ivf_nlist) == ("ivfpq", 12, 300, 5, 22)
    assert dense_index_config(NegativesConfig(index="hnsw", ef_search=99), 10).hnsw_ef_search == 99
    assert dense_index_config(NegativesConfig(index="flat", flat_max_pool=0), 10**7).kind == "flat"
    assert dense_index_config(NegativesConfig(nlist=7, flat_max_pool=0), 10**4).ivf_nlist == 7


@pytest.fixture(scope="module")
def mining_data():
    """60 queries with a pool of ~600 passages (enough to train IVF-PQ codebooks of 256 centroids)."""
    raw = textgen.retrieval_pairs(60, seed=21)
    examples = [Example(query=e["query"], pos=e["pos"]) for e in raw]
    corpus = [textgen.long_text(8 + i % 20, seed=1000 + i) for i in range(540)]
    return examples, corpus


def test_mining_picks_the_index_by_pool_size_and_reports_its_recall(tiny_embedder, mining_data):
    examples, corpus = mining_data
    small = mine_negatives(tiny_embedder, examples, corpus, NegativesConfig(num_negatives=3))
    assert small.index == "flat" and small.index_recall is None  # the default: today's exact ranking
    cfg = NegativesConfig(num_negatives=3, flat_max_pool=100, recall_queries=40)
    big = mine_negatives(tiny_embedder, examples, corpus, cfg)
    assert big.index == "ivfpq" and 0.0 < big.index_recall <= 1.0
    assert len(big.pool) == len(small.pool) > cfg.flat_max_pool


@pytest.mark.parametrize(
    "extra",
    [
        {},  # flat, dense ranking
        {
            "index": "ivfpq",
            "nprobe": 4,
        },  # approximate (and far from exact: a shard-dependent search would show)
        {
            "index": "ivfpq",
            "nprobe": 4,
            "mode": "hybrid",
            "weights": "1,0.3,1",
        },  # hybrid over dense candidates
    ],
    ids=["flat", "ivfpq", "ivfpq-hybrid"],
)
def test_queries_in_shards_give_the_one_shot_negatives(tiny_embedder, mining_data, extra):
    examples, corpus = mining_data
    base = NegativesConfig(num_negatives=4, rank_range=(2, 40), **extra)
    one_shot = mine_negatives(tiny_embedder, examples, corpus, base)
    for shard in (7, 1):
        sharded = mine_negatives(
            tiny_embedder, examples, corpus, base.model_copy(update={"query_shard_size": shard})
        )
        assert [e.neg for e in sharded.examples] == [e.neg for e in one_shot.examples]
        assert [e.neg_ranks for e in sharded.examples] == [e.neg_ranks for e in one_shot.examples]
