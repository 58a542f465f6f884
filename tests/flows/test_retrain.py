"""Prefect flows under `prefect_test_harness` (a real, temporary Prefect API), on real data of this machine.

The retrain flow runs end to end on a small slice of the installed man pages (German and French, with their
English originals), the LLM step off (the synth tests cover it against the real local server); then the same
parameters again: the encoding tasks come from Prefect's cache and the registry gets a second version.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.support.procs import platform_home
from tests.support.retrain import small_params

pytestmark = pytest.mark.skipif(
    len(glob.glob("/usr/share/man/de/man1/*")) < 100 or len(glob.glob("/usr/share/man/fr/man1/*")) < 100,
    reason="needs the translated man pages that `make setup` installs (manpages-de, manpages-fr)",
)


@pytest.fixture(scope="module")
def harness(tmp_path_factory, prefect_server):
    with platform_home(tmp_path_factory.mktemp("m3home")) as home:
        yield home


@pytest.fixture(scope="module")
def first_run(harness):
    from flows.retrain import retrain

    return retrain(small_params("t1"))


def test_retrain_end_to_end(first_run, harness):
    r = first_run
    assert r["mined"].get("pair", 0) > 100
    assert r["train"]["steps"] == 12
    assert r["negatives"]["examples"] > 0 and r["negatives"]["margin_dropped"] == 0  # margins off by default
    report = json.loads(Path(r["eval_report"]).read_text())
    assert {"dense", "sparse", "all", "bm25"} <= set(report["modes"])
    kinds = {s["kind"] for s in report["sets"]}
    assert "monolingual" in kinds and kinds <= {"monolingual", "cross-lingual"}
    assert {s["label"] for s in report["sets"]} >= {"de", "fr"}
    reg = r["registered"]
    client = mlflow.MlflowClient()
    version = client.get_model_version(reg["name"], reg["version"])
    assert (
        version.tags["promotion"] in ("promoted", "rejected")
        and version.tags["promotion_reason"] == reg["reason"]
    )
    assert "challenger" in version.aliases
    # the training metrics reached MLflow through the trainer's callback
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="metrics.`train/loss` > 0")
    assert len(runs) >= 1


def test_artifacts_and_rerun_uses_the_cache(first_run, harness):
    from prefect import get_client

    from flows.retrain import retrain

    again = small_params("t1")
    again.mine.enabled = False  # the same data: a mining run with a per-language cap would add new pairs
    second = retrain(again)
    assert int(second["registered"]["version"]) == int(first_run["registered"]["version"]) + 1

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs()
            arts = await client.read_artifacts()
            return runs, arts

    import asyncio

    task_runs, artifacts = asyncio.run(read())
    states = {}
    for t in task_runs:
        states.setdefault(t.name.rsplit("-", 1)[0], []).append(t.state.name)
    # same inputs, same code: the second mining of negatives and the base-model evaluation are cache hits
    assert "Cached" in states["base_model"], states
    assert "Cached" in states["mine"], states["mine"]
    assert "Cached" in states["evaluate_model"], states["evaluate_model"]
    keys = {a.key for a in artifacts}
    assert {"eval-trained", "eval-base", "mlflow-model-version", "mining-summary"} <= keys


def test_a_retrain_on_a_changed_eval_set_ends_in_a_real_decision(first_run, harness):
    """A scheduled retrain whose eval set differs from the champion's (here: Spanish added) re-evaluates the
    champion on the new set in the same run and decides on equal terms, with the numbers in the reason."""
    import re

    from flows.retrain import retrain

    client = mlflow.MlflowClient()
    try:
        champion = client.get_model_version_by_alias("m3", "champion")
    except mlflow.exceptions.MlflowException:
        # 12 steps from scratch need not beat their base; an operator promotes version 1 by hand (a real alias).
        client.set_registered_model_alias("m3", "champion", first_run["registered"]["version"])
        champion = client.get_model_version_by_alias("m3", "champion")
    params = small_params("t3")
    params.mine.manpage_languages = ["en", "de", "fr", "es"]
    params.train_languages = ["de", "fr", "en", "es"]
    # and a two-stage run: stage 1 dense-only on gettext translation pairs, stage 2 from its weights
    params.mine.gettext, params.mine.max_catalogs_per_language = True, 1
    params.stage1.enabled, params.stage1.max_per_language = True, 40
    params.stage1.overrides.max_steps = 3
    third = retrain(params)
    work = Path(third["work_dir"])
    assert third["stage1"]["steps"] == 3 and third["train"]["steps"] == 12
    stage1_cfg = yaml.safe_load((work / "stage1-model" / "train_config.yaml").read_text())
    assert stage1_cfg["modes"] == ["dense"] and not stage1_cfg["self_distill"]
    assert stage1_cfg["model"] == str(work / "base-model")
    lines = [json.loads(x) for x in Path(stage1_cfg["train_data"][0]).read_text().splitlines()]
    assert len(lines) > 10  # translation pairs (source string → its translation)
    registration = json.loads((work / "registration.json").read_text())
    assert registration["train_config"]["model"] == registration["stage1_model"] == str(work / "stage1-model")
    reg = third["registered"]
    assert reg["eval_set_id"] != champion.tags["eval_set_id"]
    assert str(reg["champion_version"]) == str(champion.version) and reg["champion_value"] is not None
    assert "not comparable" not in reg["reason"]
    assert re.search(r"\d\.\d{4} (>=|<) champion \d\.\d{4}", reg["reason"]), reg["reason"]
    retagged = client.get_model_version("m3", champion.version).tags
    assert any(k.startswith(f"eval.{reg['eval_set_id']}") for k in retagged), sorted(retagged)


def test_stage_one_without_its_pairs_is_a_clear_error(first_run, harness):
    """Stage 1 on a warehouse holding none of its pair kinds stops before training, naming what to mine."""
    from flows.params import Stage1Params
    from flows.retrain import export_stage1
    from flows.settings import warehouse_path

    with pytest.raises(ValueError, match=r"stage 1 found no training pairs of kinds \['synthetic'\]"):
        export_stage1.fn(str(warehouse_path()), str(harness / "s1"), Stage1Params(kinds=["synthetic"]), [])


def test_the_long_stage_extends_trains_on_long_documents_and_evaluates_them(first_run, harness):
    """With `long.enabled`, the stage-2 model's positions are extended, it trains on long-document lines of the
    train split, and the long-document held-out sets are scored for it (plain and MCLS) and for the base; the
    registered model is the long-trained one."""
    from flows.retrain import retrain
    from m3core.data.long_documents import LongDocSpec
    from m3core.model import M3Model

    params = small_params("t-long")
    params.long.enabled = True
    params.long.documents = LongDocSpec(min_tokens=1024, queries_per_doc=1, max_corpus_per_language=12)
    params.long.max_train_per_language = 6
    params.long.replay_stage2 = True  # the option's path; off, the long file is the only one
    params.long.overrides.max_steps = 2
    params.long.overrides.tokens_per_batch = 8192
    r = retrain(params)
    work = Path(r["work_dir"])
    assert r["train_long"]["steps"] == 2
    long_cfg = yaml.safe_load((work / "model-long" / "train_config.yaml").read_text())
    assert long_cfg["model"] == str(work / "model") and long_cfg["passage_max_length"] == 8192
    assert M3Model.from_pretrained(work / "model-long").max_tokens >= 8192
    # the long lines, then stage 2's own
    long_file, replayed = long_cfg["train_data"]
    assert replayed == str(work / "data" / "train-negatives.jsonl")
    lines = [json.loads(x) for x in Path(long_file).read_text().splitlines()]
    assert 0 < len(lines) <= 3 * 6 and all(len(x["pos"][0]) > len(x["query"]) for x in lines)
    assert json.loads((work / "registration.json").read_text())["checkpoint"] == str(work / "model-long")
    reports = {k: json.loads(Path(v).read_text()) for k, v in r["long_eval_reports"].items()}
    assert set(reports) == {"long-trained", "long-trained-mcls", "long-base"}
    for name, rep in reports.items():
        assert rep["sets"] and all(s["name"].startswith("long-") for s in rep["sets"]), name
        assert "bm25" in rep["modes"]
    assert reports["long-trained-mcls"]["config"]["mcls"] and not reports["long-trained"]["config"]["mcls"]
    assert reports["long-trained"]["config"]["passage_max_length"] == 8192
    assert reports["long-trained"]["hybrid_weights"] == [0.15, 0.5, 0.35]  # the paper's long preset
