"""Process-group set-up around `Trainer`, shared by `m3 train` and `python -m m3core.train` (torchrun)."""

from __future__ import annotations

import argparse
import logging
import os

from m3core.train.config import TrainConfig

logger = logging.getLogger(__name__)


def run_training(config: TrainConfig, resume_from=None, callbacks=None) -> dict:
    """Train; under torchrun (WORLD_SIZE > 1) first join the process group (NCCL on GPU, gloo on CPU)."""
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
        return Trainer(config, callbacks=callbacks).train(resume_from=resume_from)
    finally:
        if started_group:
            dist.destroy_process_group()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="training config (YAML or JSON; see m3core.train.config)")
    p.add_argument(
        "--resume", nargs="?", const="latest", help="resume from a checkpoint dir (default: the latest)"
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
