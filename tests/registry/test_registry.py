"""MLflow registry: the pyfunc (save → load → predict, the model's profile per input type, clean errors),
registration tags, aliases, promotion both ways.

Against a real MLflow SQLite store in a temporary directory.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from m3core import M3Embedder
from m3core.config import CONFIG_NAME
from registry.register import register_and_promote

TEXTS = ["river mountain engine", "Fluss Berg", "河流 山脉"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    MlflowClient().create_experiment("registry-tests", artifact_location=(d / "artifacts").as_uri())
    mlflow.set_experiment("registry-tests")
    yield uri
    mlflow.set_tracking_uri(None)


def report(value: float) -> dict:
    """An evaluation report in `m3core.evaluation.evaluate`'s shape."""
    return {
        "average": {"all": {"ndcg@10": value, "mrr@10": value}, "dense": {"ndcg@10": value - 0.01}},
        "sets": [],
    }


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model: registering writes the model card (README.md) into the checkpoint."""
    return shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def registered(store, checkpoint):
    """Three versions: v1 first (promoted), v2 worse (rejected), v3 better (promoted). Only v3 carries the ONNX
    export (the default; v1 and v2 skip it to save its ~10 s), so the champion's pyfunc serves from ONNX."""
    out = []
    for value, onnx in ((0.40, False), (0.35, False), (0.45, True)):
        out.append(
            register_and_promote(
                checkpoint,
                "m3-test",
                report(value),
                "eval-set-1",
                train_config={"model": str(checkpoint), "lr": 1e-3},
                data_snapshot="snap-1",
                base_report=report(0.30),
                onnx=onnx,
            )
        )
    return out


def test_promotion_policy_both_ways(registered):
    v1, v2, v3 = registered
    client = MlflowClient()
    # the base has trained heads (head files): its best mode, `all` 0.30 (dense 0.29), is the reference
    assert v1.decision.promote and "base model 0.3000 (all, zero-shot)" in v1.decision.reason
    assert not v2.decision.promote and "< champion 0.4000" in v2.decision.reason
    assert v3.decision.promote and ">= champion 0.4000" in v3.decision.reason
    assert str(client.get_model_version_by_alias("m3-test", "champion").version) == v3.version
    assert str(client.get_model_version_by_alias("m3-test", "challenger").version) == v3.version
    rejected = client.get_model_version("m3-test", v2.version)
    assert rejected.tags["promotion"] == "rejected" and "< champion" in rejected.tags["promotion_reason"]
    assert (
        "## Promotion" in rejected.description and rejected.tags["promotion_reason"] in rejected.description
    )
    for key in (
        "data_snapshot",
        "config_hash",
        "code_version",
        "eval_set_id",
        "eval.average.all.ndcg_at_10",
        "eval.average.dense.ndcg_at_10",
    ):
        assert key in rejected.tags, key
    assert rejected.tags["data_snapshot"] == "snap-1"


def test_a_different_eval_set_is_not_comparable(registered, checkpoint):
    r = register_and_promote(checkpoint, "m3-test", report(0.99), "eval-set-2")
    assert not r.decision.promote and "not comparable" in r.decision.reason
    assert (
        str(MlflowClient().get_model_version_by_alias("m3-test", "champion").version) == registered[2].version
    )


def test_worse_than_base_is_never_first_champion(store, checkpoint):
    r = register_and_promote(
        checkpoint, "m3-base-test", report(0.2), "s", base_report=report(0.3), base_model=checkpoint
    )
    assert not r.decision.promote
    assert "0.2000 < base model 0.3000 (all, zero-shot)" in r.decision.reason
    with pytest.raises(MlflowException):
        MlflowClient().get_model_version_by_alias("m3-base-test", "champion")


def test_base_without_heads_counts_only_dense(store, checkpoint, tmp_path):
    """A plain backbone's fresh random heads are no property of the base: its reference is dense alone."""
    plain = shutil.copytree(checkpoint, tmp_path / "plain")
    for name in ("colbert_linear.pt", "sparse_linear.pt"):
        (plain / name).unlink()
    base = {"average": {"dense": {"ndcg@10": 0.25}, "colbert": {"ndcg@10": 0.60}, "all": {"ndcg@10": 0.55}}}
    r = register_and_promote(
        checkpoint, "m3-plain-base", report(0.40), "s", base_report=base, base_model=plain
    )
    assert r.decision.promote and r.base == ("dense", 0.25)
    assert "0.4000 >= base model 0.2500 (dense, zero-shot)" in r.decision.reason
    tags = MlflowClient().get_model_version("m3-plain-base", r.version).tags
    assert tags["base_reference_mode"] == "dense" and tags["base.average.all.ndcg_at_10"] == "0.250000"


def test_pyfunc_predict_with_each_param_combination(registered, checkpoint):
    model = mlflow.pyfunc.load_model("models:/m3-test@champion")
    ref = M3Embedder(str(checkpoint), show_progress=False).encode(
        TEXTS, return_sparse=True, return_colbert_vecs=True
    )
    for dense, sparse, colbert in itertools.product([True, False], repeat=3):
        if not (dense or sparse or colbert):
            with pytest.raises(Exception, match="nothing to encode"):
                model.predict(TEXTS, params={"return_dense": False})
            continue
        out = model.predict(
            TEXTS,
            params={
                "return_dense": dense,
                "return_sparse": sparse,
                "return_colbert": colbert,
                "batch_size": 2,
            },
        )
        expected = [
            c
            for c, on in (("dense_vecs", dense), ("lexical_weights", sparse), ("colbert_vecs", colbert))
            if on
        ]
        assert list(out.columns) == expected and len(out) == len(TEXTS)
        if dense:
            np.testing.assert_allclose(np.array(out["dense_vecs"].tolist()), ref["dense_vecs"], atol=1e-5)
        if sparse:
            assert out["lexical_weights"][1] == pytest.approx(ref["lexical_weights"][1], abs=1e-6)
        if colbert:
            np.testing.assert_allclose(np.array(out["colbert_vecs"][2]), ref["colbert_vecs"][2], atol=1e-5)
    one_col = model.predict(pd.DataFrame({"anything": TEXTS}))
    np.testing.assert_allclose(np.array(one_col["dense_vecs"].tolist()), ref["dense_vecs"], atol=1e-5)
    short = model.predict(
        ["river " * 200], params={"max_length": 8, "return_colbert": True, "return_dense": False}
    )
    assert np.array(short["colbert_vecs"][0]).shape[0] == 7  # 8 tokens minus CLS


def test_the_pyfunc_serves_the_onnx_export_on_cpu(registered, monkeypatch):
    """v3 was logged with its ONNX export: `auto` serves it (fp32, torch's outputs to 1e-5), `torch` and
    `onnx-int8` are there on request; v1 has no export, so `auto` is torch and `onnx` a clear error."""
    champion = mlflow.pyfunc.load_model("models:/m3-test@champion")
    assert champion.unwrap_python_model().backend == "onnx-fp32"
    params = {"return_sparse": True, "return_colbert": True, "input_type": "passage"}
    onnx_out = champion.predict(TEXTS, params=params)
    monkeypatch.setenv("M3_PYFUNC_BACKEND", "torch")
    torch_model = mlflow.pyfunc.load_model("models:/m3-test@champion")
    assert torch_model.unwrap_python_model().backend == "torch"
    torch_out = torch_model.predict(TEXTS, params=params)
    np.testing.assert_allclose(
        np.array(onnx_out["dense_vecs"].tolist()), np.array(torch_out["dense_vecs"].tolist()), atol=1e-5
    )
    for a, b in zip(onnx_out["lexical_weights"], torch_out["lexical_weights"], strict=True):
        assert a.keys() == b.keys() and a == pytest.approx(b, abs=1e-5)
    np.testing.assert_allclose(
        np.array(onnx_out["colbert_vecs"][1]), np.array(torch_out["colbert_vecs"][1]), atol=1e-5
    )
    monkeypatch.setenv("M3_PYFUNC_BACKEND", "onnx-int8")
    int8 = mlflow.pyfunc.load_model("models:/m3-test@champion")
    assert int8.unwrap_python_model().backend == "onnx-int8"
    cos = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(
        int8.predict(TEXTS)["dense_vecs"], torch_out["dense_vecs"], strict=True)]  # fmt: skip
    assert min(cos) > 0.98, cos
    v1 = f"models:/m3-test/{registered[0].version}"
    monkeypatch.setenv("M3_PYFUNC_BACKEND", "auto")
    assert mlflow.pyfunc.load_model(v1).unwrap_python_model().backend == "torch"
    monkeypatch.setenv("M3_PYFUNC_BACKEND", "onnx")
    with pytest.raises(Exception, match="logged without its ONNX export"):
        mlflow.pyfunc.load_model(v1)
    monkeypatch.setenv("M3_PYFUNC_BACKEND", "tensorrt")
    with pytest.raises(Exception, match="expected one of"):
        mlflow.pyfunc.load_model(v1)


def test_wrongly_typed_param_is_rejected(registered):
    model = mlflow.pyfunc.load_model("models:/m3-test@champion")
    with pytest.raises(MlflowException, match="batch_size"):
        model.predict(TEXTS, params={"batch_size": "many"})
    with pytest.raises(MlflowException, match="return_sparse"):
        model.predict(TEXTS, params={"return_sparse": "yes please"})


def test_checkpoint_artifact_is_a_plain_model_directory(registered):
    path = mlflow.artifacts.download_artifacts(f"models:/m3-test/{registered[0].version}")
    ckpt = next(p for p in __import__("pathlib").Path(path).rglob("colbert_linear.pt")).parent
    for name in ("config.json", "sparse_linear.pt", "m3_config.json", "tokenizer.json"):
        assert (ckpt / name).is_file(), name


def test_consumer_in_a_fresh_process(registered, store):
    code = (
        "import json, mlflow; m = mlflow.pyfunc.load_model('models:/m3-test@champion');"
        "out = m.predict(['river mountain'], params={'return_sparse': True});"
        "print(json.dumps({'dim': len(out['dense_vecs'][0]), 'lex': len(out['lexical_weights'][0])}))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd="/"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dim"] == 64 and result["lex"] > 0


def test_bad_input_is_a_clean_invalid_parameter_error(registered):
    model = mlflow.pyfunc.load_model("models:/m3-test@champion")
    cases = [
        ([""], {}, r"input\[0\] is an empty string"),
        (["river", "   "], {}, r"input\[1\] is an empty string"),
        (["river", 3], {}, r"input\[1\] is int, not a string"),
        (TEXTS, {"input_type": "document"}, "input_type must be one of"),
        (TEXTS, {"max_length": 100_000}, "100000"),
        (TEXTS, {"return_dense": False}, "nothing to encode"),
    ]
    for texts, params, match in cases:
        with pytest.raises(MlflowException, match=match) as err:
            model.predict(texts, params=params)
        assert err.value.error_code == "INVALID_PARAMETER_VALUE", (texts, params, err.value)
    empty = model.predict([], params={"return_sparse": True})
    assert isinstance(empty, pd.DataFrame) and len(empty) == 0
    assert list(empty.columns) == ["dense_vecs", "lexical_weights"]


@pytest.fixture(scope="module")
def profiled(store, checkpoint, tmp_path_factory):
    """A registered champion whose profile (m3_config.json) says e5-style instructions and short queries."""
    d = shutil.copytree(checkpoint, tmp_path_factory.mktemp("profiled") / "model")
    cfg = json.loads((d / CONFIG_NAME).read_text())
    cfg.update(
        query_instruction="query: ",
        passage_instruction="passage: ",
        query_max_length=16,
        passage_max_length=64,
    )
    (d / CONFIG_NAME).write_text(json.dumps(cfg))
    r = register_and_promote(d, "m3-profile", report(0.40), "s", train_config={"model": "e5-like"})
    assert r.decision.promote
    return d


def test_consumer_gets_the_models_profile_in_a_fresh_process(profiled, store):
    """`input_type` picks the side: its instruction and its max length come from the model, not the caller."""
    texts = {"query": ["river mountain", "Fluss Berg"], "passage": ["the river and the mountain", "der Berg"]}
    code = """
import json, sys, mlflow
m = mlflow.pyfunc.load_model("models:/m3-profile@champion")
texts, out = json.loads(sys.argv[1]), {}
for side in ("query", "passage"):
    df = m.predict(texts[side], params={"input_type": side, "return_sparse": True})
    out[side] = {"dense": df["dense_vecs"].tolist(), "lex": df["lexical_weights"].tolist()}
    long = m.predict(["river " * 200], params={"input_type": side, "return_colbert": True, "return_dense": False})
    out[side]["tokens"] = len(long["colbert_vecs"][0])
out["default"] = m.predict(texts["query"])["dense_vecs"].tolist()
print(json.dumps(out))
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(texts)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    emb = M3Embedder(str(profiled), show_progress=False)
    for side, prefix in (("query", "query: "), ("passage", "passage: ")):
        ref = emb.encode([prefix + t for t in texts[side]], return_sparse=True)
        np.testing.assert_allclose(np.array(out[side]["dense"]), ref["dense_vecs"], atol=1e-5)
        for got, want in zip(out[side]["lex"], ref["lexical_weights"], strict=True):
            assert got == pytest.approx(want, abs=1e-6)
    bare = emb.encode(texts["query"])["dense_vecs"]
    assert not np.allclose(np.array(out["query"]["dense"]), bare, atol=1e-3)  # the instruction was applied
    np.testing.assert_allclose(np.array(out["default"]), np.array(out["query"]["dense"]), atol=1e-6)
    # max_length 0 (the default): the side's own length, 16 / 64 tokens (ColBERT drops the first)
    assert (out["query"]["tokens"], out["passage"]["tokens"]) == (15, 63)


def test_card_carries_the_profile(profiled, store):
    from registry.aliases import checkpoint_for_alias

    version = MlflowClient().get_model_version_by_alias("m3-profile", "champion")
    readme = (checkpoint_for_alias("m3-profile", "champion") / "README.md").read_text()
    for card in (version.description, readme):
        assert '| query instruction | `"query: "` |' in card
        assert '| passage instruction | `"passage: "` |' in card
        assert "| query max length | `16` |" in card and "| pooling | `cls` |" in card
        assert "**promoted to champion**" in card


def test_logged_model_metadata_carries_the_profile(profiled, store):
    info = mlflow.models.get_model_info("models:/m3-profile@champion")
    assert (
        info.metadata["query_instruction"] == "query: "
        and info.metadata["passage_instruction"] == "passage: "
    )
    assert info.metadata["hybrid_weights"] == [1.0, 0.3, 1.0]  # no weights chosen for it: the short preset
