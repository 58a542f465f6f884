"""Training data (FlagEmbedding JSONL) and the batch samplers."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from m3core.train.bucket_sampler import LengthBucketBatchSampler, RandomBatchSampler
from m3core.train.data import TrainDataset
from tests.support import REPO_ROOT


def write_lines(path, lines):
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


GOOD = json.dumps({"query": "q1", "pos": ["p1"], "neg": ["n1", "n2", "n3"]})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"query": "q", "pos": ["\xff\xfe"], "neg": []}', "invalid UTF-8"),
        (json.dumps({"query": "", "pos": ["p"]}), "'query' must be a non-empty string"),
        (json.dumps({"query": "q", "pos": []}), "'pos' is empty"),
        (json.dumps({"query": "q", "pos": ["p"], "neg": [3]}), r"'neg'\[0\] must be a non-empty string"),
        (json.dumps({"query": "q", "pos": ["p"], "pos_scores": [1.0]}), "given together"),
        (
            json.dumps({"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1], "neg_scores": [1, 2]}),
            "list of 1 numbers",
        ),
        (json.dumps({"query": "q", "pos": ["p"], "passage": "x"}), "unknown fields"),
        (json.dumps(["q", "p"]), "expected a JSON object"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, reason):
    path = write_lines(tmp_path / "train.jsonl", [GOOD, GOOD, line])
    with pytest.raises(ValueError, match=rf"{path.name}:3: .*{reason}"):
        TrainDataset.from_jsonl(path)


def test_skip_bad_lines_counts_them(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [GOOD, b"{oops", GOOD, json.dumps({"query": "q"}), b""])
    ds = TrainDataset.from_jsonl(path, skip_bad_lines=True)
    assert len(ds) == 2
    assert sum(ds.skipped.values()) == 2
    assert any("invalid JSON" in k for k in ds.skipped)


def test_directories_and_missing_paths(tmp_path):
    (tmp_path / "d").mkdir()
    write_lines(tmp_path / "d" / "a.jsonl", [GOOD])
    write_lines(tmp_path / "d" / "b.jsonl", [GOOD, GOOD])
    assert len(TrainDataset.from_jsonl(tmp_path / "d")) == 3
    with pytest.raises(FileNotFoundError, match="no such training data"):
        TrainDataset.from_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.jsonl"):
        TrainDataset.from_jsonl(tmp_path / "empty")


def test_groups_positive_first_seeded_and_with_replacement(tmp_path):
    line = json.dumps({"query": "q", "pos": ["p1", "p2"], "neg": ["n1", "n2"], "prompt": "query: "})
    ds = TrainDataset.from_jsonl(write_lines(tmp_path / "t.jsonl", [line]), group_size=6, seed=1)
    g = ds.group(0, epoch=0)
    assert g.query == "query: q"
    assert g.passages[0] in ("p1", "p2") and len(g.passages) == 6
    assert set(g.passages[1:]) <= {"n1", "n2"}  # 5 negatives from 2: with replacement
    assert ds.group(0, epoch=0) == g  # same seed/epoch → same draw
    draws = Counter(tuple(ds.group(0, epoch=e).passages) for e in range(20))
    assert len(draws) > 1  # epochs draw differently
    with pytest.raises(ValueError, match="no negatives"):
        TrainDataset.from_jsonl(
            write_lines(tmp_path / "n.jsonl", [json.dumps({"query": "q", "pos": ["p"]})]), group_size=2
        ).group(0, 0)


def test_teacher_scores_follow_the_drawn_passages(tmp_path):
    line = json.dumps(
        {
            "query": "q",
            "pos": ["p"],
            "neg": ["a", "b", "c"],
            "pos_scores": [9.0],
            "neg_scores": [1.0, 2.0, 3.0],
        }
    )
    ds = TrainDataset.from_jsonl(write_lines(tmp_path / "t.jsonl", [line]), group_size=3)
    g = ds.group(0, 0)
    assert g.teacher_scores == [9.0] + [{"a": 1.0, "b": 2.0, "c": 3.0}[p] for p in g.passages[1:]]


def test_training_reads_what_the_one_writer_writes(tmp_path):
    from m3core.data.examples import Example, write_jsonl

    written = [
        Example("q1", ["p1"], ["n1", "n2"], pos_scores=[2.0], neg_scores=[1.0, 0.5], prompt="query: "),
        Example("q2", ["p2", "p3"], type="symmetric_class"),
    ]
    ds = TrainDataset.from_jsonl(write_jsonl(written, tmp_path / "t.jsonl"), group_size=1)
    assert ds.examples == written and ds.examples[0].source == f"{tmp_path / 't.jsonl'}:1"
    assert ds.query_text(ds.examples[0]) == "query: q1" and not ds.group(1, 0).in_batch_negatives


def test_no_in_batch_negatives_type():
    from m3core.train.data import parse_example

    assert not parse_example({"query": "q", "pos": ["p"], "type": "symmetric_class"}).in_batch_negatives
    assert parse_example({"query": "q", "pos": ["p"]}).in_batch_negatives


LENGTHS = [30, 450, 600, 1500, 40, 480, 700, 90, 2500, 10, 20, 800] * 5


def test_length_buckets_are_homogeneous_and_sized_by_budget():
    s = LengthBucketBatchSampler(
        LENGTHS, group_size=2, tokens_per_batch=8000, edges=(0, 500, 1000, 2000, 4000), seed=3
    )
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))  # every example once
    for b in batches:
        buckets = {min(3, sum(LENGTHS[i] > e for e in (500, 1000, 2000))) for i in b}
        assert len(buckets) == 1
        bucket = buckets.pop()
        assert len(b) <= s.batch_size(bucket) == max(1, 8000 // (2 * (500, 1000, 2000, 4000)[bucket]))
    assert s.epoch == 1 and s.position == 0


def test_sampler_resumes_where_it_stopped():
    s = LengthBucketBatchSampler(LENGTHS, 2, 8000, (0, 500, 1000, 2000, 4000), seed=3)
    full = list(s) + list(s)  # two epochs
    t = LengthBucketBatchSampler(LENGTHS, 2, 8000, (0, 500, 1000, 2000, 4000), seed=3)
    it = iter(t)
    head = [next(it) for _ in range(5)]
    state = t.state_dict()
    u = LengthBucketBatchSampler(LENGTHS, 2, 8000, (0, 500, 1000, 2000, 4000), seed=3)
    u.load_state_dict(state)
    assert head + list(u) + list(u) == full
    with pytest.raises(ValueError, match="seed"):
        LengthBucketBatchSampler(LENGTHS, 2, 8000, seed=4).load_state_dict(state)


def test_ranks_draw_the_same_bucket_each_step():
    ranks = [
        LengthBucketBatchSampler(LENGTHS, 2, 8000, (0, 500, 1000, 2000, 4000), seed=5, world_size=2, rank=r)
        for r in (0, 1)
    ]
    a, b = list(ranks[0]), list(ranks[1])
    assert len(a) == len(b)
    bucket = lambda i: sum(LENGTHS[i] > e for e in (500, 1000, 2000))  # noqa: E731
    for x, y in zip(a, b, strict=True):
        assert len(x) == len(y) >= 1 and not set(x) & set(y)
        assert {bucket(i) for i in x} == {bucket(i) for i in y}


def test_random_sampler_baseline():
    s = RandomBatchSampler(10, batch_size=4, seed=0)
    batches = list(s)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(i for b in batches for i in b) == list(range(10))


def test_shipped_configs_are_valid():

    from m3core.train import TrainConfig

    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        cfg = TrainConfig.load(path)
        assert cfg.bucket_edges[-1] >= cfg.passage_max_length or cfg.sampler == "random", path
