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
    from m3core.model import M3Model

    model = M3Model.from_pretrained(args.model_dir)
    model.extend_positions(args.max_length, method=args.method)
    model.config.passage_max_length = args.max_length
    print(model.save_pretrained(args.out_dir))
    return 0
