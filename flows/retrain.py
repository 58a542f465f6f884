"""Flow `retrain`: the whole loop, in order — the Prefect deployment operators schedule and run.

mine_pairs → synthesize_queries → export (training JSONL + held-out eval sets) → base model → mine_hard_negatives
(interim model: the champion, else the base) → [stage 1: dense only on translation pairs, when enabled] → train
(self-distillation, from stage 1's weights if it ran, else the base) → [long stage, when enabled: positions
extended, training on long documents, the long-document evaluation] → evaluate (trained and base, next to BM25)
→ register_and_promote. `python -m flows.retrain` runs it on the embedded default (README's first command).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from flows.evaluate import choose_weights_flow, evaluate_flow
from flows.mine_hard_negatives import mine_hard_negatives
from flows.mine_pairs import mine_pairs
from flows.params import LongParams, RetrainParams, Stage1Params, TrainParams
from flows.register_and_promote import RegistrationFailed, register_and_promote_flow
from flows.retries import transient
from flows.settings import cache_dir, configure_environment, run_dir, warehouse_path
from flows.synthesize_queries import synthesize_queries
from flows.train import train_flow
from m3core.train.config import TrainConfig
from m3core.train.recipes import TrainOverrides

REGISTRATION_FILE = "registration.json"  # what registering a run's model needs, beside retrain_params.json


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=transient)
def export(
    warehouse: str,
    out: str,
    languages: list[str],
    max_per_language: int | None,
    max_queries: int | None,
    dev_max_queries: int | None,
) -> dict:
    """`m3core.data.export.export_run` (`m3 export run`): training JSONL, held-out and dev BEIR sets."""
    from m3core.data.export import export_run
    from m3core.data.warehouse import Warehouse

    with Warehouse(warehouse, read_only=True) as wh:
        return export_run(
            wh,
            Path(out),
            langs=languages or None,
            max_per_language=max_per_language,
            max_queries=max_queries,
            dev_max_queries=dev_max_queries,
        )


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=transient)
def export_stage1(warehouse: str, out: str, params: Stage1Params, languages: list[str]) -> dict:
    """`m3core.data.export.export_training` of stage 1's pair kinds (train split only: the held-out pages never
    reach stage 1 either); a ValueError when the warehouse holds none of them."""
    from m3core.data.export import export_training
    from m3core.data.warehouse import Warehouse

    with Warehouse(warehouse, read_only=True) as wh:
        lines = export_training(
            wh,
            Path(out),
            kinds=params.kinds,
            langs=languages or None,
            max_per_language=params.max_per_language,
        )
    n = sum(lines["train"].values())
    if n == 0:
        raise ValueError(
            f"{warehouse}: stage 1 found no training pairs of kinds {params.kinds} for languages "
            f"{languages or 'any'} (translation pairs come from gettext: mine with mine.gettext on)"
        )
    return {"train_file": str(Path(out) / "train.jsonl"), "train_lines": n, "by_kind": lines["train"]}


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=transient)
def export_long(warehouse: str, out: str, model: str, params: LongParams, languages: list[str]) -> dict:
    """`m3core.data.long_documents.export_long_run`: long-document held-out sets and training lines, lengths
    counted with `model`'s tokenizer."""
    from transformers import AutoTokenizer

    from m3core.data.long_documents import export_long_run
    from m3core.data.warehouse import Warehouse

    with Warehouse(warehouse, read_only=True) as wh:
        return export_long_run(
            wh,
            Path(out),
            AutoTokenizer.from_pretrained(model),
            spec=params.documents,
            langs=languages or None,
            max_train_per_language=params.max_train_per_language,
        )


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def base_model(params: TrainParams, warehouse: str, data_snapshot: str, out: str) -> str:
    """The backbone to train from: a known backbone built (once) under `$M3_HOME/backbones`, a directory or Hub
    id as given, or — for `scratch` — a small model built with a tokenizer trained on warehouse text.

    Cached by the data snapshot: a rerun on unchanged data reuses the same base model (and so its cached
    negatives and evaluation).
    """
    from m3core.backbones import prepare_base_model

    return prepare_base_model(params.backbone, out, warehouse=warehouse, scratch=params.scratch)


def train_config(
    params: TrainParams, model: str, data: str | list[str], out: str, overrides: TrainOverrides | None = None
) -> TrainConfig:
    """The run's TrainConfig: the recipe for the backbone, the flow's overrides (`overrides`, default the
    `train` parameters' own; stage 1 passes its), and the flow's bookkeeping."""
    from m3core.train.recipes import build_train_config

    overrides = params.overrides if overrides is None else overrides
    cfg = build_train_config(
        params.recipe_name, model, out, [data] if isinstance(data, str) else data, overrides
    )
    flow_defaults = {"show_progress": False, "logging_steps": 10, "report_to": ["mlflow"]}
    set_by_user = overrides.model_dump(exclude_none=True)
    return cfg.model_copy(update={k: v for k, v in flow_defaults.items() if k not in set_by_user})


@flow(name="retrain", log_prints=True)
def retrain(params: RetrainParams | None = None) -> dict:
    """Run the whole retraining pipeline; returns what it produced (model URI, eval report paths, decision)."""
    from m3core.model import has_trained_heads

    configure_environment()
    params = params or RetrainParams()
    log = get_run_logger()
    name = params.run_name or time.strftime("retrain-%Y%m%d-%H%M%S")
    work = run_dir(name)
    (work / "retrain_params.json").write_text(params.model_dump_json(indent=2))
    wh = str(warehouse_path())
    timings: dict[str, float] = {}

    def timed(stage: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[stage] = round(time.perf_counter() - t0, 1)
        return out

    mined = timed("mine", mine_pairs, params.mine, wh)
    synth = timed("synth", synthesize_queries, params.synth, wh)
    data = timed(
        "export",
        export,
        wh,
        str(work / "data"),
        params.train_languages,
        params.max_train_per_language,
        params.eval.max_queries,
        params.eval.dev_max_queries,
    )
    log.info(
        "training lines %s; eval sets %s; dev sets %s",
        data["train_lines"],
        data["eval_sets"],
        data["dev_sets"],
    )
    base = timed("base_model", base_model, params.train, wh, data["data_snapshot"], str(work / "base-model"))
    negs = timed(
        "negatives",
        mine_hard_negatives,
        data["train_file"],
        str(work / "data" / "train-negatives.jsonl"),
        base,
        params.negatives,
        params.registry.model_name,
    )
    start, stage1 = base, None
    if params.stage1.enabled:
        s1_data = timed(
            "export_stage1",
            export_stage1,
            wh,
            str(work / "data" / "stage1"),
            params.stage1,
            params.train_languages,
        )
        log.info("stage 1: %s training lines %s", s1_data["train_lines"], s1_data["by_kind"])
        s1_cfg = train_config(
            params.train, base, s1_data["train_file"], str(work / "stage1-model"), params.stage1.overrides
        )
        stage1 = timed(
            "train_stage1", train_flow, s1_cfg.model_dump(mode="json"), params.train.torchrun_nproc
        )
        start = str(work / "stage1-model")
    cfg = train_config(params.train, start, negs["file"], str(work / "model"))
    summary = timed("train", train_flow, cfg.model_dump(mode="json"), params.train.torchrun_nproc)
    final, long_data, long_summary = str(work / "model"), None, None
    if params.long.enabled:  # the registered model is then the long-trained one
        long_data = timed(
            "export_long",
            export_long,
            wh,
            str(work / "data" / "long"),
            base,
            params.long,
            params.train_languages,
        )
        log.info(
            "long stage: training lines %s; eval sets %s", long_data["train_lines"], long_data["eval_sets"]
        )
        long_files = [long_data["train_file"], *([negs["file"]] if params.long.replay_stage2 else [])]
        long_cfg = train_config(
            params.train, final, long_files, str(work / "model-long"), params.long.overrides
        )
        long_summary = timed(
            "train_long", train_flow, long_cfg.model_dump(mode="json"), params.train.torchrun_nproc
        )
        final = str(work / "model-long")
    weights = None
    if params.eval.choose_weights and data["dev_dir"]:
        weights = timed("choose_weights", choose_weights_flow, final, data["dev_dir"], params.eval)
    timed(  # the reports are read back from their run directory by `register_run`
        "eval_trained",
        evaluate_flow,
        final,
        data["eval_dir"],
        str(work / "eval" / "trained"),
        params.eval,
        "eval-trained",
    )
    # The base model is scored only in the modes it really has: a plain backbone's fresh random heads say
    # nothing about it (its fresh ColBERT head scores misleadingly well), so such a base is dense only.
    base_modes = None if has_trained_heads(base) else ["dense"]
    timed(
        "eval_base",
        evaluate_flow,
        base,
        data["eval_dir"],
        str(work / "eval" / "base"),
        params.eval,
        "eval-base",
        base_modes,
    )
    long_reports = {}
    if long_data is not None:
        long_reports = evaluate_long(work, final, base, base_modes, long_data["eval_dir"], params.long, timed)
    (work / REGISTRATION_FILE).write_text(
        json.dumps(
            {
                "checkpoint": final,
                "eval_dir": data["eval_dir"],
                "eval_report": str(work / "eval" / "trained" / "report.json"),
                "base_report": str(work / "eval" / "base" / "report.json"),
                "base_model": base,
                "stage1_model": start if stage1 is not None else None,
                "train_config": cfg.model_dump(mode="json"),
                "data_snapshot": data["data_snapshot"],
            },
            indent=2,
        )
    )
    registered = timed("register", register_run, str(work))
    result = {
        "run": name,
        "work_dir": str(work),
        "mined": mined["totals"],
        "synth": {k: synth.get(k) for k in ("accepted", "rejected", "sent", "cached")},
        "negatives": {k: v for k, v in negs.items() if k != "file"},  # topped up, short, margin_dropped
        "stage1": stage1,
        "train": summary,
        "train_long": long_summary,
        "long_eval_reports": long_reports,
        "recipe": params.train.recipe_name,
        "hybrid_weights": weights,
        "registered": registered,
        "eval_report": str(work / "eval" / "trained" / "report.json"),
        "base_eval_report": str(work / "eval" / "base" / "report.json"),
        "timings_s": timings,
    }
    (work / "retrain_result.json").write_text(json.dumps(result, indent=2, default=str))
    # Corpus embeddings were shared by this run's evaluations (dev weights, held-out set); the next run's
    # models differ, so they would only grow the home (the reports keep every number).
    shutil.rmtree(cache_dir("embeddings"), ignore_errors=True)
    return result


def evaluate_long(
    work: Path, model: str, base: str, base_modes: list[str] | None, eval_dir: str, params: LongParams, timed
) -> dict[str, str]:
    """The long-document evaluation: the long-trained model (and in MCLS mode), and the base model at its own
    length (a 512-position backbone reads the first 512 tokens); BM25 beside each. Returns the report paths."""
    runs = {"long-trained": (model, params.eval, None)}
    if params.mcls_eval:
        runs["long-trained-mcls"] = (model, params.eval.model_copy(update={"mcls": True}), None)
    runs["long-base"] = (base, params.eval.model_copy(update={"passage_max_length": None}), base_modes)
    reports = {}
    for name, (m, p, modes) in runs.items():
        out = work / "eval" / name
        timed(
            f"eval_{name.replace('-', '_')}", evaluate_flow, m, eval_dir, str(out), p, f"eval-{name}", modes
        )
        reports[name] = str(out / "report.json")
    return reports


def register_run(work: str) -> dict:
    """Register a retrain's trained model from its run directory, as the retrain does (`m3 register RUN_DIR`).

    Reads the run's `retrain_params.json` and `registration.json` (written before registration starts), so a
    registration that failed — the tracking server away longer than the retries — can be done later unchanged;
    one that stopped halfway is finished, not duplicated. Raises `RegistrationFailed` naming the command.
    """
    run = Path(work)
    params_file, inputs_file = run / "retrain_params.json", run / REGISTRATION_FILE
    for f in (params_file, inputs_file):
        if not f.is_file():
            raise FileNotFoundError(
                f"{run}: not a retrain run directory ready for registration (no {f.name})"
            )
    params = RetrainParams.model_validate_json(params_file.read_text())
    inputs = json.loads(inputs_file.read_text())
    try:
        return register_and_promote_flow(
            inputs["checkpoint"],
            json.loads(Path(inputs["eval_report"]).read_text()),
            inputs["eval_dir"],
            params.registry,
            json.loads(Path(inputs["base_report"]).read_text()),
            base_model=inputs["base_model"],
            eval_params=params.eval,
            train_config=inputs["train_config"],
            data_snapshot=inputs["data_snapshot"],
            run_params=params.model_dump(mode="json"),
        )
    except Exception as err:
        raise RegistrationFailed(
            f"registering {inputs['checkpoint']} failed: {type(err).__name__}: {err}. The trained model is "
            f"kept there; once the tracking server ({tracking_uri()}) answers, "
            f"register it with: m3 register {run}"
        ) from err


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI as it may be shown: without the user and password of an `https://user:pw@host` URI."""
    return re.sub(r"//[^/@]*@", "//", os.environ.get("MLFLOW_TRACKING_URI", "(MLFLOW_TRACKING_URI unset)"))


def quick(params: RetrainParams) -> RetrainParams:
    """Deprecated alias of `RetrainParams.quick()` (kept for one release)."""
    import warnings

    warnings.warn(
        "flows.retrain.quick is deprecated: use RetrainParams.quick()", DeprecationWarning, stacklevel=2
    )
    return params.quick()


if __name__ == "__main__":
    from m3core.cli import main_for

    sys.exit(main_for("retrain", prog="python -m flows.retrain"))
