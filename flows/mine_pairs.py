"""Flow `mine_pairs`: real multilingual data (gettext catalogs, man pages, JSONL) into the DuckDB warehouse.

The embedded default mines in one process (with a pool of worker processes). With `params.shards` every source
unit is a mapped task on a Dask cluster (a local one, or `dask_address`) that writes its Parquet shard
(`m3core.data.shards`; an unchanged unit's shard is found and skipped), and one task then ingests the shards into
the warehouse: the same rows, counts and quarantine as the single-process path.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.params import MineParams
from flows.retries import transient
from flows.settings import configure_environment, dask_task_runner, warehouse_path
from m3core.data.pipeline import MineConfig, RunSummary
from m3core.data.shards import ShardInfo


def _result(summary: RunSummary, counts: dict) -> dict:
    totals = dict(summary.totals())
    get_run_logger().info("mining run %s: %s in %.0f s", summary.run_id, totals, summary.seconds)
    return {
        "run_id": summary.run_id,
        "seconds": summary.seconds,
        "totals": totals,
        "counts": {k: [list(r) for r in v] for k, v in counts.items()},
    }


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=transient)  # the warehouse may be locked
def ingest(params: MineParams, warehouse: str) -> dict:
    """`m3core.data.pipeline.mine_sources` (`m3 mine`) into the warehouse, then its counts."""
    from m3core.data.pipeline import mine_sources
    from m3core.data.report import warehouse_counts
    from m3core.data.warehouse import Warehouse

    with Warehouse(warehouse) as wh:
        summary = mine_sources(params.sources(), wh, workers=params.workers, progress=False)
        counts = warehouse_counts(wh)
    return _result(summary, counts)


# No Prefect cache: the shard's name is its content fingerprint, and the library skips a unit whose shard exists.
@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=[10], retry_condition_fn=transient)
def mine_unit(source: Any, unit: Any, config: MineConfig, shard_root: str) -> ShardInfo:
    """`m3core.data.shards.write_unit_shard`: one source unit into its Parquet shard (skipped when unchanged)."""
    from m3core.data.shards import write_unit_shard

    return write_unit_shard(source, unit, config, shard_root)


@flow(name="mine_pairs_shards")
def mine_units(params: MineParams, config: MineConfig, shard_root: str) -> list[ShardInfo]:
    """Every unit of every source as a mapped task; the shards in unit order (the order ingestion replays)."""
    work = [(source, unit) for source in params.sources().build() for unit in source.units()]
    futures = mine_unit.map(
        [s for s, _ in work], [u for _, u in work], unmapped(config), unmapped(shard_root)
    )
    shards = [f.result() for f in futures]
    made = [s for s in shards if not s.skipped]
    get_run_logger().info(
        "%d units: %d shards made (%.1f MB, %.0f s of work), %d unchanged (skipped), under %s",
        len(shards), len(made), sum(s.bytes for s in made) / 1e6, sum(s.seconds for s in made),
        len(shards) - len(made), shard_root,
    )  # fmt: skip
    return shards


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=transient)  # the warehouse may be locked
def ingest_shards(params: MineParams, config: MineConfig, shards: list[ShardInfo], warehouse: str) -> dict:
    """`m3core.data.shards.ingest_shards`: the shards into the warehouse (its one writer), then its counts."""
    from m3core.data.report import warehouse_counts
    from m3core.data.shards import ingest_shards as ingest_shard_files
    from m3core.data.warehouse import Warehouse

    with Warehouse(warehouse) as wh:
        summary = ingest_shard_files(params.sources().build(), shards, wh, config)
        counts = warehouse_counts(wh)
    result = _result(summary, counts)
    result["shards"] = {"units": len(shards), "skipped": sum(s.skipped for s in shards)}
    return result


@flow(name="mine_pairs", log_prints=True)
def mine_pairs(params: MineParams | None = None, warehouse: str | None = None) -> dict:
    """Ingest the configured sources; returns the run's totals by outcome and the warehouse counts."""
    from m3core.data.pipeline import mine_config
    from m3core.paths import m3_home

    configure_environment()
    params = params or MineParams()
    if not params.enabled:
        return {"run_id": None, "seconds": 0.0, "totals": {}, "counts": {}}
    warehouse = str(warehouse or warehouse_path())
    if params.shards:
        config = mine_config(params.sources(), workers=params.workers, progress=False)
        shard_root = params.shard_root or str(m3_home() / "shards")
        shards = mine_units.with_options(
            task_runner=dask_task_runner(params.dask_address, params.dask_workers)
        )(params, config, shard_root)
        result = ingest_shards(params, config, shards, warehouse)
    else:
        result = ingest(params, warehouse)
    lines = [f"| {k} | {v} |" for k, v in sorted(result["totals"].items())]
    create_markdown_artifact(
        markdown="\n".join(
            [f"### Mining run {result['run_id']}", "", "| outcome | records |", "|---|---|", *lines]
        ),
        key="mining-summary",
    )
    return result


if __name__ == "__main__":
    mine_pairs()
