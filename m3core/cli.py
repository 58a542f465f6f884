"""The `m3` command line: the platform's one front door.

The library's own sub-commands are the modules in `m3core/commands/`; the app layers contribute theirs through
the entry-point group `m3.commands` (see `pyproject.toml`: `synth` adds `m3 synth` / `m3 llm`, `flows` adds
`m3 retrain`), so the library never imports them. Each command module exposes `HELP`,
`add_arguments(parser)` and `run(args) -> int`. `python -m m3core.train` (torchrun's entry) is this same front
door's `train` command. Logging is configured here, in the entry point, never in library modules.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from importlib.metadata import entry_points

COMMAND_GROUP = "m3.commands"
USER_ERROR = 2  # the exit code of an expected error (bad input, missing file, busy warehouse), as argparse

# The library's sub-commands, in the order `m3 --help` lists them (the contributed ones follow). Command modules
# import torch, duckdb, etc. inside `run()`, so building the parser stays cheap.
COMMANDS: dict[str, str] = {
    "encode": "m3core.commands.encode",
    "mine": "m3core.commands.mine",
    "export": "m3core.commands.export",
    "export-onnx": "m3core.commands.export_onnx",
    "build-model": "m3core.commands.build_model",
    "extend-positions": "m3core.commands.extend_positions",
    "backbone": "m3core.commands.backbone",
    "train": "m3core.commands.train",
    "eval": "m3core.commands.eval",
    "negatives": "m3core.commands.negatives",
}


def command_modules() -> dict[str, str]:
    """Sub-command name → module: the library's, then those installed packages contribute (`m3.commands`)."""
    out = dict(COMMANDS)
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        if ep.name in out and out[ep.name] != ep.value:
            raise RuntimeError(
                f"entry point {ep.name}={ep.value} clashes with the command from {out[ep.name]}"
            )
        out[ep.name] = ep.value
    return out


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `m3` parser; `only`: just that sub-command (cheaper: `python -m m3core.train` needs one)."""
    parser = argparse.ArgumentParser(prog="m3", description="M3 embedding platform: train, encode, evaluate.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in command_modules().items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


QUIET_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2", "openai", "urllib3")  # httpx2: the openai SDK's


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """INFO by default; under torchrun only rank 0 logs INFO and every line names its rank."""
    rank = int(os.environ.get("RANK", "0"))
    level = logging.WARNING if quiet or rank > 0 else (logging.DEBUG if verbose > 1 else logging.INFO)
    where = f" [rank {rank}]" if "RANK" in os.environ else ""
    logging.basicConfig(
        level=level, format=f"%(asctime)s{where} %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    # HTTP clients log every request at INFO (URLs included); only with -vv.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return run(args)


def run(args: argparse.Namespace) -> int:
    from m3core.data.warehouse import WarehouseLockedError

    configure_logging(args.verbose, args.quiet)
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError, WarehouseLockedError) as err:
        # Expected errors (bad input, a missing or unusable path, a busy warehouse): one line naming the input,
        # exit 2 like argparse's usage errors; the traceback only with -v.
        if args.verbose:
            logging.getLogger("m3").error("traceback", exc_info=True)
        print(f"m3 {args.command}: error: {err}", file=sys.stderr)
        return USER_ERROR


def main_for(command: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """One sub-command as its own program (`python -m m3core.train`, `python -m flows.retrain`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=command)
    if prog:
        parser.prog = prog
    return run(parser.parse_args([command, *argv]))


if __name__ == "__main__":
    sys.exit(main())
