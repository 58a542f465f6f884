"""Flow `encode_corpus`: encode a large corpus as shards, fanned out as mapped tasks over a Dask cluster.

The scale-out path for mining and evaluation on big corpora: each shard is a task (cached by model and text
content, so a rerun after a failure encodes only the shards that did not finish), run by
`prefect_dask.DaskTaskRunner` — a local cluster of worker processes by default, or an existing cluster
(`dask_address`, e.g. `tcp://scheduler:8786` with one GPU per worker). The shards are merged into one
`m3core.retrieval.corpus.Embeddings` directory that `Retriever`/`m3 eval --cache-dir` reuse.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from flows.retries import transient
from flows.settings import configure_environment, dask_task_runner, fingerprint
from m3core.modes import OUTPUTS, Output


@task(
    cache_policy=INPUTS + TASK_SOURCE,
    persist_result=True,
    retries=1,
    retry_delay_seconds=[10],
    retry_condition_fn=transient,
)
def encode_shard(
    model: str,
    model_fingerprint: str,
    corpus: str,
    corpus_fingerprint: str,
    start: int,
    stop: int,
    outputs: list[Output],
    batch_size: int,
    max_length: int | None,
    out_dir: str,
) -> str:
    from m3core import M3Embedder
    from m3core.retrieval.corpus import encode_texts, read_corpus

    texts = read_corpus(corpus)[start:stop]
    emb = encode_texts(
        M3Embedder(model, show_progress=False),
        texts,
        outputs=tuple(outputs),
        side="passage",
        batch_size=batch_size,
        max_length=max_length,
    )
    emb.save(out_dir)
    return out_dir


@flow(name="encode_corpus_shards")
def encode_shards(
    model: str,
    corpus: str,
    bounds: list[tuple[int, int]],
    outputs: list[Output],
    batch_size: int,
    max_length: int | None,
    out_dir: str,
) -> list[str]:
    m_fp, c_fp = fingerprint(model), fingerprint(corpus)
    futures = encode_shard.map(
        model,
        m_fp,
        corpus,
        c_fp,
        [b[0] for b in bounds],
        [b[1] for b in bounds],
        [outputs] * len(bounds),
        batch_size,
        max_length,
        [f"{out_dir}/shard-{i:04d}" for i in range(len(bounds))],
    )
    return [f.result() for f in futures]


@flow(name="encode_corpus", log_prints=True)
def encode_corpus(
    model: str,
    corpus: str,
    out_dir: str,
    shards: int = 4,
    outputs: list[Output] | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    dask_address: str | None = None,
    dask_workers: int = 2,
) -> str:
    """Encode `corpus` in `shards` pieces on a Dask cluster; returns the merged embeddings directory."""
    from m3core.retrieval.corpus import Embeddings, read_corpus

    configure_environment()
    outputs = outputs or list(OUTPUTS)
    n = len(read_corpus(corpus))
    shards = max(1, min(shards, n))
    bounds = [(i * n // shards, (i + 1) * n // shards) for i in range(shards)]
    paths = encode_shards.with_options(task_runner=dask_task_runner(dask_address, dask_workers))(
        model, corpus, bounds, outputs, batch_size, max_length, out_dir
    )
    meta = {"model": model, "corpus": corpus, "shards": shards}
    merged = Embeddings.concat([Embeddings.load(p) for p in paths], meta)
    merged.save(Path(out_dir) / "merged")
    get_run_logger().info("encoded %d passages in %d shards into %s", n, shards, Path(out_dir) / "merged")
    return str(Path(out_dir) / "merged")
