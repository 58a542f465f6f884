"""`m3 build-model`: a small random-init M3 model whose tokenizer is trained on a text file."""

from __future__ import annotations

import argparse

NAME = "build-model"
HELP = (
    "Build a small M3 model from scratch: a tokenizer trained on TEXT_FILE + a random XLM-R-shaped encoder."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text_file", help="training text for the tokenizer, one text per line")
    p.add_argument("out_dir")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from m3core.builder import TinyModelSpec, build_tiny_model

    with open(args.text_file, encoding="utf-8") as fh:
        texts = [line.strip() for line in fh if line.strip()]
    if not texts:
        raise ValueError(f"{args.text_file}: no text to train the tokenizer on")
    spec = TinyModelSpec(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_heads=args.heads,
        intermediate_size=4 * args.hidden_size,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    print(build_tiny_model(args.out_dir, texts, spec))
    return 0
