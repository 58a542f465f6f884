"""Flow `synthesize_queries`: an LLM writes one specific question per long-document paragraph.

Any OpenAI-compatible endpoint (the key from a Prefect Secret block), or a local llama.cpp server started and
stopped around the task. Every request is cached in the warehouse by (model, prompt, params), so a rerun after a
failure sends only what has not succeeded yet.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.params import SynthParams
from flows.retries import transient
from flows.settings import configure_environment, warehouse_path


@task(retries=2, retry_delay_seconds=[30, 120], retry_condition_fn=transient)
def generate(params: SynthParams, warehouse: str) -> dict:
    """`synth.generate.generate_queries` (`m3 synth generate [--local]`), the key from a Prefect Secret."""
    from pydantic import SecretStr

    from m3core.data.warehouse import Warehouse
    from synth.generate import generate_queries

    log = get_run_logger()
    api_key = None
    if params.api_key_secret:
        from prefect.blocks.system import Secret

        api_key = SecretStr(Secret.load(params.api_key_secret).get())
    local_model = (params.local_model or "default") if params.local_server else None
    with Warehouse(warehouse) as wh:
        report = generate_queries(params.config, wh, local_model=local_model, api_key=api_key, progress=False)
    if report.status in ("partial", "failed"):
        if params.on_failed_requests == "fail":
            raise RuntimeError(f"synthetic queries: {report.message}")
        log.warning("%s", report.message)
    else:
        log.info(report.message)
    return {
        "run_id": report.run_id,
        "status": report.status,
        "planned": report.n_planned,
        "cached": report.n_cached,
        "sent": report.n_sent,
        "accepted": report.n_accepted,
        "rejected": report.n_rejected,
        "errors": report.n_errors,
        "seconds": round(report.seconds, 1),
        "by_language": [list(x) for x in report.by_language],
        "message": report.message,
    }


@flow(name="synthesize_queries", log_prints=True)
def synthesize_queries(params: SynthParams | None = None, warehouse: str | None = None) -> dict:
    configure_environment()
    params = params or SynthParams()
    if not params.enabled:
        return {"status": "disabled"}
    result = generate(params, str(warehouse or warehouse_path()))
    if result["by_language"]:
        create_table_artifact(
            table=[
                dict(zip(["language", "accepted", "rejected", "acceptance"], row, strict=False))
                for row in result["by_language"]
            ],
            key="synthetic-query-acceptance",
        )
    return result


if __name__ == "__main__":
    synthesize_queries()
