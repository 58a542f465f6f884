"""The `register_and_promote` flow across a change of eval set, under `prefect_test_harness`.

Real pieces throughout: tiny models, small BEIR sets on disk, `m3core.evaluation` through the cached
`evaluate_model` task, an MLflow SQLite store. The first registration (eval set A: English) is gated by the base
model's best real mode (the base is a plain backbone: dense only). The second (eval set B adds German) finds the
champion measured on A only, so the flow evaluates the champion on B in the same run, tags it, and decides on
equal terms. A third on B reads the tags instead of evaluating again.
"""

from __future__ import annotations

import shutil

import mlflow
import pytest
import torch

from m3core.evaluation import EvalConfig, evaluate, load_eval_sets
from tests.support import textgen
from tests.support.procs import platform_home

NAME = "m3-flow"
MODES = ["dense", "sparse", "colbert", "dense+sparse", "all"]
METRIC = "average.all.ndcg@10"


def write_sets(root, langs):
    """One monolingual BEIR set per language from the seeded generator (keyword queries, topic passages)."""
    return textgen.write_toy_eval_sets(root, langs, n_topics=72, seed=3)


@pytest.fixture(scope="module")
def env(tmp_path_factory, prefect_server):
    with platform_home(tmp_path_factory.mktemp("m3home-promotion")) as home:
        yield home


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    """`base`: the tiny backbone without head files (loads with fresh heads); `first`: the tiny model with its
    heads; `second`: `first` with every weight perturbed (another model, other numbers)."""
    from m3core import M3Model

    root = tmp_path_factory.mktemp("models")
    base = shutil.copytree(tiny_model_dir, root / "base")
    for name in ("colbert_linear.pt", "sparse_linear.pt"):
        (base / name).unlink()
    first = shutil.copytree(tiny_model_dir, root / "first")
    model = M3Model.from_pretrained(first)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    second = model.save_pretrained(root / "second")
    return {"base": base, "first": first, "second": second}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {"A": write_sets(root / "A", ["en"]), "B": write_sets(root / "B", ["en", "de"])}


def eval_params():
    from flows.params import EvalParams

    return EvalParams(modes=MODES)


def evaluated(model, eval_dir, out):
    from flows.evaluate import evaluate_flow

    return evaluate_flow(str(model), str(eval_dir), str(out), eval_params())


def register(models, checkpoint, eval_dir, tmp, tag):
    from flows.params import RegisterParams
    from flows.register_and_promote import register_and_promote_flow

    report = evaluated(checkpoint, eval_dir, tmp / f"eval-{tag}")
    base_report = evaluated(models["base"], eval_dir, tmp / f"base-{tag}")
    result = register_and_promote_flow(
        checkpoint=str(checkpoint),
        eval_report=report,
        eval_dir=str(eval_dir),
        params=RegisterParams(model_name=NAME),
        base_report=base_report,
        base_model=str(models["base"]),
        eval_params=eval_params(),
        train_config={
            "model": str(models["base"]),
            "max_steps": 3,
            "learning_rate": 1e-4,
            "temperature": 0.05,
        },
        data_snapshot=f"pairs=snapshot-{tag}",
        run_params={"run": tag},
    )
    return result, report, base_report


@pytest.fixture(scope="module")
def runs(env, models, sets, tmp_path_factory):
    """Three registrations: `first` on A, `second` on B (the champion must be re-evaluated), `second` on B again."""
    tmp = tmp_path_factory.mktemp("runs")
    return {
        "A": register(models, models["first"], sets["A"], tmp, "A"),
        "B": register(models, models["second"], sets["B"], tmp, "B"),
        "B-again": register(models, models["second"], sets["B"], tmp, "B-again"),
    }


def champion_tag(eval_set_id: str) -> str:
    from registry.register import eval_tag

    return eval_tag(eval_set_id, METRIC)


def test_first_champion_is_gated_by_the_bases_real_mode(runs, sets):
    from flows.settings import fingerprint

    r, report, base_report = runs["A"]
    base_dense = base_report["average"]["dense"]["ndcg@10"]
    candidate = report["average"]["all"]["ndcg@10"]
    assert r["eval_set_id"] == fingerprint(sets["A"])
    # The base has no head files: its (random fresh head) sparse/ColBERT/hybrid numbers do not count.
    assert r["base_reference"] == {"mode": "dense", "value": pytest.approx(base_dense)}
    assert max(base_report["average"][m]["ndcg@10"] for m in MODES) >= base_dense
    assert r["promoted"] == (candidate >= base_dense)
    assert f"{candidate:.4f} >= base model {base_dense:.4f} (dense, zero-shot)" in r["reason"], r["reason"]
    assert r["promoted"], "the later tests need a champion"  # same backbone: all = dense + the heads' signal
    assert not r["champion_reevaluated"] and r["champion_version"] is None
    tags = mlflow.MlflowClient().get_model_version(NAME, r["version"]).tags
    assert float(tags[champion_tag(r["eval_set_id"])]) == pytest.approx(candidate, abs=1e-6)


def test_champion_is_reevaluated_on_the_new_set_in_the_same_run(runs, sets, models):
    from flows.settings import fingerprint
    from m3core import M3Embedder

    first, (r, report, _) = runs["A"][0], runs["B"]
    set_b = fingerprint(sets["B"])
    assert r["eval_set_id"] == set_b != first["eval_set_id"]
    assert r["champion_reevaluated"] and r["champion_version"] == first["version"]
    # The champion's tag on B is its real score on B (independently evaluated here), not its score on A.
    tags = mlflow.MlflowClient().get_model_version(NAME, first["version"]).tags
    assert tags["eval_set_id"] == first["eval_set_id"]  # registered on A; B is recorded next to it
    on_b = evaluate(
        M3Embedder(str(models["first"]), show_progress=False),
        load_eval_sets(sets["B"]),
        EvalConfig(modes=MODES),
    )
    champion_b = on_b["average"]["all"]["ndcg@10"]
    assert float(tags[champion_tag(set_b)]) == pytest.approx(champion_b, abs=1e-6)
    assert float(tags[f"eval.{set_b}.average.dense.ndcg_at_10"]) == pytest.approx(
        on_b["average"]["dense"]["ndcg@10"], abs=1e-6
    )
    assert r["champion_value"] == pytest.approx(champion_b, abs=1e-6)
    # A real decision on equal terms: the numbers in the reason are the candidate's and the champion's on B.
    candidate = report["average"]["all"]["ndcg@10"]
    base = r["base_reference"]["value"]
    assert r["promoted"] == (candidate >= champion_b and candidate >= base), r["reason"]
    assert f"{candidate:.4f}" in r["reason"] and f"champion {champion_b:.4f}" in r["reason"], r["reason"]
    assert "not comparable" not in r["reason"]
    champion = mlflow.MlflowClient().get_model_version_by_alias(NAME, "champion")
    assert str(champion.version) == (r["version"] if r["promoted"] else first["version"])


def test_a_later_run_on_the_same_set_reads_the_tags(runs):
    second, third = runs["B"][0], runs["B-again"][0]
    assert not third["champion_reevaluated"]
    expected = second["candidate_value"] if second["promoted"] else second["champion_value"]
    assert third["champion_value"] == pytest.approx(expected, abs=1e-6)
    # the same model as the second registration: a tie with itself promotes, the same comparison keeps
    assert third["promoted"] == second["promoted"], (second["reason"], third["reason"])


def expected_rows(report, base_report, label):
    """The card's two rows for one eval set, built here from the reports (nDCG@10 ×100, † for fresh heads)."""
    entry = next(s for s in report["sets"] if s["label"] == label)
    base = next(s for s in base_report["sets"] if s["label"] == label)
    trained = [f"{100 * entry['results'][m]['ndcg@10']:.1f}" for m in [*MODES, "bm25"]]
    based = [f"{100 * base['results'][m]['ndcg@10']:.1f}" + ("" if m == "dense" else "†") for m in MODES]
    return (
        f"| {label} | trained | {entry['n_queries']} | {entry['n_docs']} | " + " | ".join(trained) + " |",
        f"| {label} | base |  |  | " + " | ".join(based) + " |  |",
    )


def test_every_version_has_a_model_card(runs):
    from registry.aliases import checkpoint_for_version

    client = mlflow.MlflowClient()
    for key, labels in (("A", ["en"]), ("B", ["en", "de"])):
        r, report, base_report = runs[key]
        version = client.get_model_version(NAME, r["version"])
        readme = (checkpoint_for_version(NAME, r["version"]) / "README.md").read_text()
        for card in (version.description, readme):
            for label in labels:
                for row in expected_rows(report, base_report, label):
                    assert row in card, (row, card)
            assert "| **average** | trained |" in card and "| *average monolingual* | base |" in card
            assert "| pooling | `cls` |" in card and "| query instruction | none |" in card
            assert "| hybrid weights (dense / sparse / colbert) | 1 / 0.3 / 1" in card
            assert f"snapshot: `pairs=snapshot-{key}`" in card and "| max_steps | `3` |" in card
            assert "† the base model has no trained sparse/ColBERT heads" in card
            assert r["reason"] in card
            assert ("**promoted to champion**" in card) == r["promoted"]
