"""Flow `synthesize_queries`: an LLM writes one specific question per long-document paragraph.

Any OpenAI-compatible endpoint (the key from a Prefect Secret block), or a local llama.cpp server started and
stopped around the task. Every request is cached in the warehouse by (model, prompt, params), so a rerun after a
failure sends only what has not succeeded yet.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.params import SynthParams
from flows.settings import configure_environment, warehouse_path


@task(retries=2, retry_delay_seconds=[30, 120])
def generate(params: SynthParams, warehouse: str) -> dict:
    from pydantic import SecretStr

    from m3core.data.warehouse import Warehouse
    from synth.config import BudgetConfig, EndpointConfig, SelectionConfig, SynthConfig
    from synth.generate import run
    from synth.server import LocalLLMServer

    log = get_run_logger()
    api_key = None
    if params.api_key_secret:
        from prefect.blocks.system import Secret

        api_key = SecretStr(Secret.load(params.api_key_secret).get())
    config = SynthConfig(
        selection=SelectionConfig(
            languages=params.languages, per_language=params.per_language, source="manpages"
        ),
        budget=BudgetConfig(max_requests=params.max_requests),
    )
    with Warehouse(warehouse) as wh:
        if params.local_server:
            server_args = {"model": params.local_model} if params.local_model else {}
            with LocalLLMServer(**server_args) as server:
                report = run(config.model_copy(update={"endpoint": server.endpoint()}), wh, progress=False)
        else:
            if not (params.base_url and params.model):
                raise ValueError("synthesize_queries: set base_url and model, or local_server=true")
            endpoint = EndpointConfig(base_url=params.base_url, model=params.model)
            report = run(
                config.model_copy(update={"endpoint": endpoint}), wh, api_key=api_key, progress=False
            )
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
