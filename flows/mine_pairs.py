"""Flow `mine_pairs`: real multilingual data (gettext catalogs, man pages, JSONL) into the DuckDB warehouse."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.params import MineParams
from flows.retries import transient
from flows.settings import configure_environment, warehouse_path


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=transient)  # the warehouse may be locked
def ingest(params: MineParams, warehouse: str) -> dict:
    """`m3core.data.pipeline.mine_sources` (`m3 mine`) into the warehouse, then its counts."""
    from m3core.data.pipeline import mine_sources
    from m3core.data.report import warehouse_counts
    from m3core.data.warehouse import Warehouse

    log = get_run_logger()
    with Warehouse(warehouse) as wh:
        summary = mine_sources(params.sources(), wh, workers=params.workers, progress=False)
        counts = warehouse_counts(wh)
    totals = dict(summary.totals())
    log.info("mining run %s: %s in %.0f s", summary.run_id, totals, summary.seconds)
    return {
        "run_id": summary.run_id,
        "seconds": summary.seconds,
        "totals": totals,
        "counts": {k: [list(r) for r in v] for k, v in counts.items()},
    }


@flow(name="mine_pairs", log_prints=True)
def mine_pairs(params: MineParams | None = None, warehouse: str | None = None) -> dict:
    """Ingest the configured sources; returns the run's totals by outcome and the warehouse counts."""
    configure_environment()
    params = params or MineParams()
    if not params.enabled:
        return {"run_id": None, "seconds": 0.0, "totals": {}, "counts": {}}
    result = ingest(params, str(warehouse or warehouse_path()))
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
