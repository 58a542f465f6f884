"""Flow `train`: self-distillation training (m3core.train) in this process, or under torchrun on N GPUs."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.settings import configure_environment, mlflow_experiment


@task
def run_training(config: dict, nproc: int | None = None) -> dict:
    """`m3core.train.launch.train_with`: this process, or torchrun with `nproc` processes (what `m3 train --nproc`
    does)."""
    from m3core.train import TrainConfig
    from m3core.train.launch import train_with

    # The model directory belongs to this flow run (a retrain's run directory): a rerun by the same name
    # trains again from the start, replacing it.
    summary = train_with(TrainConfig(**config), nproc=nproc, overwrite=True)
    get_run_logger().info("training done: %s", summary)
    return summary


@flow(name="train", log_prints=True)
def train_flow(config: dict, nproc: int | None = None) -> dict:
    """`config` holds `m3core.train.TrainConfig` fields (model, output_dir, train_data, ...)."""
    configure_environment()
    if "mlflow" in config.get("report_to", []):
        mlflow_experiment()
    return run_training(config, nproc)
