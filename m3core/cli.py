"""The `m3` command line: one sub-command per module in `m3core/commands/`.

Each command module exposes `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`. Logging is
configured here (the entry point), never in library modules.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Sub-commands, in the order `m3 --help` lists them. Command modules import torch, duckdb, etc. inside `run()`,
# so building the parser stays cheap and `m3 encode` never pays for the data layer or the trainer.
COMMANDS: dict[str, str] = {
    "encode": "m3core.commands.encode",
    "mine": "m3core.commands.mine",
    "export": "m3core.commands.export",
    "build-model": "m3core.commands.build_model",
    "extend-positions": "m3core.commands.extend_positions",
    "backbone": "m3core.commands.backbone",
    "train": "m3core.commands.train",
    "eval": "m3core.commands.eval",
    "negatives": "m3core.commands.negatives",
    "synth": "m3core.commands.synth",
    "llm": "m3core.commands.llm",
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m3", description="M3 embedding platform: train, encode, evaluate.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # User errors: one clear line, no traceback (use -vv to see it).
        logging.getLogger("m3").debug("traceback", exc_info=True)
        print(f"m3 {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
