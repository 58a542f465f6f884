"""Flow `mine_hard_negatives`: an interim M3 model ranks the corpus; negatives come from a rank range.

The interim model is the registry's current champion when there is one (`models:/<name>@<alias>`), otherwise
the base model. Encoding is the expensive part: the task is cached by the content of its inputs, so a retrain
that failed later resumes without encoding again.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from flows.params import NegativesParams
from flows.retries import transient
from flows.settings import configure_environment, fingerprint
from m3core.negatives import NegativesConfig


@task(retries=1, retry_delay_seconds=[30], retry_condition_fn=transient)
def resolve_interim_model(model_name: str, alias: str | None, fallback: str) -> str:
    """`registry.aliases.model_for_alias`: the checkpoint of `models:/<model_name>@<alias>`, else `fallback`."""
    from registry.aliases import model_for_alias

    model = model_for_alias(model_name, alias, fallback)
    get_run_logger().info("mining negatives with %s", model if model == fallback else f"{model_name}@{alias}")
    return model


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def mine(
    train_file: str,
    train_fingerprint: str,
    model: str,
    model_fingerprint: str,
    params: NegativesParams,
    out_file: str,
) -> dict:
    """`m3core.negatives.mine_file` (`m3 negatives --input --output`): negatives for every line of `train_file`
    against its own passages, written as FlagEmbedding JSONL."""
    from m3core import M3Embedder
    from m3core.negatives import mine_file

    config = NegativesConfig(**params.model_dump(exclude={"interim_alias"}))
    embedder = M3Embedder(model, show_progress=False)
    return mine_file(embedder, train_file, out_file, config, model_id=model_fingerprint)


@flow(name="mine_hard_negatives", log_prints=True)
def mine_hard_negatives(
    train_file: str,
    out_file: str,
    base_model: str,
    params: NegativesParams | None = None,
    model_name: str = "m3",
) -> dict:
    configure_environment()
    params = params or NegativesParams()
    model = resolve_interim_model(model_name, params.interim_alias, base_model)
    return mine(train_file, fingerprint(train_file), model, fingerprint(model), params, out_file)
