"""Process-group set-up around `Trainer`, and the torchrun launch: what `m3 train` and the `train` flow call."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from m3core.train.config import TrainConfig
from m3core.train.output_dir import prepare

logger = logging.getLogger(__name__)


def run_training(
    config: TrainConfig, resume_from=None, callbacks=None, overwrite: bool = False, force: bool = False
) -> dict:
    """Train; under torchrun (WORLD_SIZE > 1) first join the process group (NCCL on GPU, gloo on CPU).

    The output directory is checked first (`m3core.train.output_dir.prepare`: one run per directory; rank 0
    checks it while the others wait), so a refused run costs no model load."""
    import torch
    import torch.distributed as dist

    from m3core.train.trainer import Trainer

    started_group = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
        started_group = True
    try:
        if int(os.environ.get("RANK", "0")) == 0:
            prepare(config.output_dir, resume_from, overwrite)
        if dist.is_initialized():
            dist.barrier()
        return Trainer(config, callbacks=callbacks).train(resume_from=resume_from, force=force)
    finally:
        if started_group:
            dist.destroy_process_group()


def launch_torchrun(
    config: TrainConfig,
    nproc: int,
    resume_from: str | None = None,
    overwrite: bool = False,
    force: bool = False,
) -> dict:
    """Train under `torchrun --standalone` with `nproc` processes on this machine (NCCL on GPUs, gloo on CPU).

    The config is saved next to the model (`launch_config.yaml`) and every rank reads it; returns rank 0's
    `train_summary.json`. A failed rank raises `CalledProcessError` (torchrun stops the others).
    """
    prepare(config.output_dir, resume_from, overwrite)  # here, before the ranks start (they see it clean)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "launch_config.yaml"
    config.save(config_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd += ["-m", "m3core.train", "--config", str(config_path)]
    if resume_from:
        cmd += ["--resume", str(resume_from)]
    if force:
        cmd += ["--force"]
    logger.info("launching %s", " ".join(cmd))
    subprocess.run(cmd, check=True, env=os.environ.copy())
    return json.loads((out / "train_summary.json").read_text())


def train_with(
    config: TrainConfig,
    nproc: int | None = None,
    resume_from=None,
    callbacks=None,
    overwrite: bool = False,
    force: bool = False,
) -> dict:
    """Train in this process (`nproc` None or 1, or already under torchrun), else launch torchrun.

    `overwrite`: replace a previous run in `output_dir`; `force`: resume a checkpoint of another config/data."""
    if nproc and nproc > 1 and "WORLD_SIZE" not in os.environ:
        if callbacks:
            raise ValueError("callbacks cannot cross into torchrun's processes: use report_to in the config")
        return launch_torchrun(config, nproc, resume_from, overwrite=overwrite, force=force)
    return run_training(
        config, resume_from=resume_from, callbacks=callbacks, overwrite=overwrite, force=force
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="training config (YAML or JSON; see m3core.train.config)")
    p.add_argument(
        "--resume", nargs="?", const="latest", help="resume from a checkpoint dir (default: the latest)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace a previous run in output_dir (default: refuse)"
    )
    p.add_argument(
        "--force", action="store_true", help="with --resume: resume even if the config or data changed"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (YAML value), e.g. --set max_steps=100",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    import yaml

    config = TrainConfig.load(args.config)
    if args.set:
        raw = config.model_dump()
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep or key not in raw:
                raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of the config keys")
            raw[key] = yaml.safe_load(value)
        config = TrainConfig(**raw)
    return config
