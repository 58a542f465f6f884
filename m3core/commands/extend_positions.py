"""`m3 extend-positions`: grow a backbone's learned position table (e.g. XLM-R 512 → 8192 tokens)."""

from __future__ import annotations

import argparse

NAME = "extend-positions"
HELP = "Extend a model's position embeddings to take longer inputs, and save it to OUT_DIR."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("out_dir")
    p.add_argument("--max-length", type=int, default=8192, help="new maximum input length in tokens")
    p.add_argument("--method", choices=["copy", "interpolate"], default="copy")


def run(args: argparse.Namespace) -> int:
    from m3core.positions import extend_model_dir

    print(extend_model_dir(args.model_dir, args.out_dir, args.max_length, method=args.method))
    return 0
