"""`m3 train --config FILE [--nproc N]`: training in this process, or under torchrun with N processes (GPUs).

Under torchrun (`torchrun --nproc_per_node N -m m3core.train ...` is this command) every rank runs it; rank 0
prints the summary.
"""

from __future__ import annotations

import argparse
import json

NAME = "train"
HELP = "Fine-tune an M3 model with self-knowledge distillation (config: YAML/JSON TrainConfig)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from m3core.train.launch import add_arguments as add

    add(p)
    p.add_argument(
        "--nproc", type=int, default=None, metavar="N", help="launch torchrun with N processes (one per GPU)"
    )


def run(args: argparse.Namespace) -> int:
    import os

    from m3core.train.launch import config_from_args, train_with

    config = config_from_args(args)
    if args.quiet:
        config.show_progress = False
    summary = train_with(
        config, nproc=args.nproc, resume_from=args.resume, overwrite=args.overwrite, force=args.force
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0
