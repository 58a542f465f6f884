"""`m3 train --config FILE`: one-process training (use torchrun with `-m m3core.train` for several)."""

from __future__ import annotations

import argparse
import json

NAME = "train"
HELP = "Fine-tune an M3 model with self-knowledge distillation (config: YAML/JSON TrainConfig)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from m3core.train.launch import add_arguments as add

    add(p)


def run(args: argparse.Namespace) -> int:
    from m3core.train.launch import config_from_args, run_training

    config = config_from_args(args)
    if args.quiet:
        config.show_progress = False
    summary = run_training(config, resume_from=args.resume)
    print(json.dumps(summary, indent=2))
    return 0
