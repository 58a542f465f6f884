"""Flow `mine_hard_negatives`: an interim M3 model ranks the corpus; negatives come from a rank range.

The interim model is the registry's current champion when there is one (`models:/<name>@<alias>`), otherwise
the base model. Encoding is the expensive part: the task is cached by the content of its inputs, so a retrain
that failed later resumes without encoding again. With `pool_shards` the pool is written out and encoded by
the `encode_corpus` flow as shard tasks on a Dask cluster (a local one, or `dask_address`), and mining reads the
merged embeddings instead of encoding the pool itself (it checks they are the pool's); the default encodes it in
the mining task, on one machine.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from flows.encode_corpus import encode_corpus
from flows.params import NegativesParams
from flows.retries import transient
from flows.settings import configure_environment, fingerprint
from m3core.negatives import needed_outputs


@task(retries=1, retry_delay_seconds=[30], retry_condition_fn=transient)
def resolve_interim_model(model_name: str, alias: str | None, fallback: str) -> str:
    """`registry.aliases.model_for_alias`: the checkpoint of `models:/<model_name>@<alias>`, else `fallback`."""
    from registry.aliases import model_for_alias

    model = model_for_alias(model_name, alias, fallback)
    get_run_logger().info("mining negatives with %s", model if model == fallback else f"{model_name}@{alias}")
    return model


@task
def write_pool(train_file: str, out_file: str) -> str:
    """`m3core.negatives.write_pool`: the passages mining `train_file` ranks, as a corpus file to encode."""
    from m3core.negatives import write_pool as write

    n = write(train_file, out_file)
    get_run_logger().info("pool of %d passages written to %s", n, out_file)
    return out_file


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def mine(
    train_file: str,
    train_fingerprint: str,
    model: str,
    model_fingerprint: str,
    params: NegativesParams,
    out_file: str,
    pool_embeddings: str | None = None,
) -> dict:
    """`m3core.negatives.mine_file` (`m3 negatives --input --output [--pool-embeddings]`): negatives for every
    line of `train_file` against its own passages, written as FlagEmbedding JSONL."""
    from m3core import M3Embedder
    from m3core.negatives import mine_file

    embedder = M3Embedder(model, show_progress=False)
    return mine_file(
        embedder,
        train_file,
        out_file,
        params.config(),
        model_id=model_fingerprint,
        pool_embeddings=pool_embeddings,
    )


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
    pool = None
    if params.pool_shards:
        work = Path(out_file).parent / f"{Path(out_file).stem}-pool"
        corpus = write_pool(train_file, str(work / "pool.jsonl"))
        pool = encode_corpus(
            model,
            corpus,
            str(work / "embeddings"),
            shards=params.pool_shards,
            outputs=list(needed_outputs(params.config())),
            batch_size=params.batch_size,
            max_length=params.passage_max_length,
            dask_address=params.dask_address,
            dask_workers=params.dask_workers,
        )
    return mine(train_file, fingerprint(train_file), model, fingerprint(model), params, out_file, pool)
