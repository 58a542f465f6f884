"""MLflow registry: the pyfunc (save → load → predict), registration tags, aliases, promotion both ways.

Against a real MLflow SQLite store in a temporary directory.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from m3core import M3Embedder
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
def registered(store, tiny_model_dir):
    """Three versions: v1 first (promoted), v2 worse (rejected), v3 better (promoted)."""
    out = []
    for value in (0.40, 0.35, 0.45):
        out.append(
            register_and_promote(
                tiny_model_dir,
                "m3-test",
                report(value),
                "eval-set-1",
                train_config={"model": "tiny", "lr": 1e-3},
                data_snapshot="snap-1",
                base_report=report(0.30),
            )
        )
    return out


def test_promotion_policy_both_ways(registered):
    v1, v2, v3 = registered
    client = MlflowClient()
    assert v1.decision.promote and "base model 0.3000" in v1.decision.reason
    assert not v2.decision.promote and "< champion 0.4000" in v2.decision.reason
    assert v3.decision.promote and ">= champion 0.4000" in v3.decision.reason
    assert str(client.get_model_version_by_alias("m3-test", "champion").version) == v3.version
    assert str(client.get_model_version_by_alias("m3-test", "challenger").version) == v3.version
    rejected = client.get_model_version("m3-test", v2.version)
    assert rejected.tags["promotion"] == "rejected" and "< champion" in rejected.tags["promotion_reason"]
    assert "Promotion:" in rejected.description
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


def test_a_different_eval_set_is_not_comparable(registered, tiny_model_dir):
    r = register_and_promote(tiny_model_dir, "m3-test", report(0.99), "eval-set-2")
    assert not r.decision.promote and "not comparable" in r.decision.reason
    assert (
        str(MlflowClient().get_model_version_by_alias("m3-test", "champion").version) == registered[2].version
    )


def test_worse_than_base_is_never_first_champion(store, tiny_model_dir):
    r = register_and_promote(tiny_model_dir, "m3-base-test", report(0.2), "s", base_report=report(0.3))
    assert not r.decision.promote
    with pytest.raises(MlflowException):
        MlflowClient().get_model_version_by_alias("m3-base-test", "champion")


def test_pyfunc_predict_with_each_param_combination(registered, tiny_model_dir):
    model = mlflow.pyfunc.load_model("models:/m3-test@champion")
    ref = M3Embedder(str(tiny_model_dir), show_progress=False).encode(
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
