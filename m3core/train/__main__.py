"""`torchrun --nproc_per_node N -m m3core.train --config FILE` (or `python -m m3core.train`)."""

import argparse
import logging
import os
import sys

from m3core.train.launch import add_arguments, config_from_args, run_training


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m3core.train", description="Train an M3 model.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    summary = run_training(config_from_args(args), resume_from=args.resume)
    if rank == 0:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
