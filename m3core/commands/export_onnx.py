"""`m3 export-onnx MODEL_DIR OUT_DIR [--int8] [--overwrite]`: one ONNX graph with all three M3 outputs.

OUT_DIR then loads with `M3Embedder(OUT_DIR)` (the ONNX backend, detected) or any onnxruntime client; its layout
and the graph's inputs and outputs are described in `m3core.onnx_export`.
"""

from __future__ import annotations

import argparse
import logging

NAME = "export-onnx"
HELP = (
    "Export an M3 model to one ONNX graph (dense, sparse and ColBERT outputs) with its tokenizer and config; "
    "--int8 adds a dynamically quantized copy"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", help="the M3 model directory (or Hub id) to export")
    p.add_argument("out_dir", metavar="OUT_DIR", help="new or empty directory to write the export into")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx (onnxruntime dynamic quantization: int8 MatMul weights)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a previous ONNX export in OUT_DIR")


def _quantizer_chatter(record) -> bool:
    """False for onnxruntime.quantization's per-tensor INFO lines and its advice to pre-process (measured: it
    changes nothing for these graphs; see `m3core.onnx_export`), which it logs on the root logger."""
    if record.name != "root":
        return True
    return record.levelno >= logging.WARNING and not record.getMessage().startswith(
        "Please consider to run pre-processing"
    )


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from m3core.onnx_export import export_onnx, exporter_logs_at

    if args.verbose < 2:
        logging.getLogger().addFilter(_quantizer_chatter)
    try:  # the exporter's loggers: only errors on the command line (all of it with -vv: our DEBUG)
        with exporter_logs_at(logging.ERROR):
            manifest = export_onnx(args.model_dir, args.out_dir, int8=args.int8, overwrite=args.overwrite)
    finally:
        logging.getLogger().removeFilter(_quantizer_chatter)
    out = Path(args.out_dir)
    for variant, name in manifest["files"].items():
        size = sum(os.path.getsize(p) for p in out.glob(name + "*"))  # the graph and any external data
        kept = manifest["int8_fp32_matmuls"] if variant == "int8" else {}
        note = f" ({len(kept)} MatMuls with outlier inputs kept fp32)" if kept else ""
        print(f"{out / name}: {variant}, {size / 1e6:.1f} MB{note}")
    print(f"exported in {manifest['export_seconds']} s; load with M3Embedder({str(out)!r})")
    return 0
