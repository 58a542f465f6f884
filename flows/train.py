"""Flow `train`: self-distillation training (m3core.train) in this process, or under torchrun on N GPUs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.settings import configure_environment, mlflow_experiment


@task
def run_training(config: dict, nproc: int | None = None) -> dict:
    import json

    from m3core.train import TrainConfig, train

    cfg = TrainConfig(**config)
    log = get_run_logger()
    if not nproc or nproc == 1:
        summary = train(cfg)
    else:  # one process per GPU; NCCL on GPUs (gloo on CPU)
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        cfg_path = Path(cfg.output_dir) / "launch_config.yaml"
        cfg.save(cfg_path)
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            "-m",
            "m3core.train",
            "--config",
            str(cfg_path),
        ]
        log.info("launching %s", " ".join(cmd))
        subprocess.run(cmd, check=True, env=os.environ.copy())
        summary = json.loads((Path(cfg.output_dir) / "train_summary.json").read_text())
    log.info("training done: %s", summary)
    return summary


@flow(name="train", log_prints=True)
def train_flow(config: dict, nproc: int | None = None) -> dict:
    """`config` holds `m3core.train.TrainConfig` fields (model, output_dir, train_data, ...)."""
    configure_environment()
    if "mlflow" in config.get("report_to", []):
        mlflow_experiment()
    return run_training(config, nproc)
