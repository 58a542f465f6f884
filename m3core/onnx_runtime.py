"""`OnnxRunner`: an `m3 export-onnx` directory in an onnxruntime session, the embedder's ONNX backend.

Why a runner and not a second embedder: tokenization, length-sorted batching and post-processing (lexical
dicts, ColBERT rows) live once in `M3Embedder`; a backend only turns one padded numpy batch into the model's
outputs, `(dense, sparse, colbert, colbert_mask)`. `TorchRunner` (in `m3core.embedder`) is the other one.
The export's layout and manifest (what `m3core.onnx_export` writes) are defined here, so the embedder can
recognize an export without importing the exporter.

The graph's pooling and normalization were fixed at export time (`m3_config.json` says which); the prompts,
lengths and MCLS stride there are read by the embedder as for a torch model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from m3core.config import CONFIG_NAME, M3Config
from m3core.modes import OUTPUTS

FORMAT = "m3-onnx"  # `m3_config.json` → `extra["onnx"]["format"]`: how a reader tells an ONNX M3 export
FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}  # variant → graph file in the export directory
GRAPH_INPUTS = ("input_ids", "attention_mask", "cls_mask")
GRAPH_OUTPUTS = (*OUTPUTS, "colbert_mask")  # the three M3 outputs, and which ColBERT rows are tokens


def onnx_manifest(directory: str | os.PathLike) -> dict | None:
    """The ONNX manifest of an export directory (`m3_config.json` → `extra["onnx"]`), or None when it is not one."""
    path = Path(directory)
    if not (path / CONFIG_NAME).is_file():
        return None
    manifest = M3Config.load(path).extra.get("onnx")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    return manifest


def is_onnx_export(directory: str | os.PathLike) -> bool:
    """Whether `directory` is an `m3 export-onnx` output (what `M3Embedder` auto-detects)."""
    return Path(directory).is_dir() and onnx_manifest(directory) is not None


class OnnxRunner:
    """Run an exported M3 graph on CPU: a padded numpy batch in, `(dense, sparse, colbert, colbert_mask)` out.

    Args:
        directory: an `m3 export-onnx` output.
        variant: which graph of the export: `fp32` (exact) or `int8` (exported with `--int8`).
        threads: onnxruntime intra-op threads; default `torch.get_num_threads()`, so both backends use the
            same number of cores unless told otherwise.
    """

    def __init__(self, directory: str | os.PathLike, *, variant: str = "fp32", threads: int | None = None):
        import onnxruntime as ort
        import torch
        from transformers import PreTrainedTokenizerFast

        self.directory = Path(directory)
        manifest = onnx_manifest(self.directory)
        if manifest is None:
            raise ValueError(
                f"{directory}: not an ONNX export (no {FORMAT} manifest in m3_config.json); "
                "make one with `m3 export-onnx MODEL_DIR OUT_DIR`"
            )
        files = manifest["files"]
        if variant not in files:
            raise ValueError(
                f"{directory}: has no {variant!r} graph (it has {sorted(files)}); "
                + ("re-export with --int8" if variant == "int8" else "expected one of those")
            )
        self.manifest, self.variant = manifest, variant
        self.config = M3Config.load(self.directory)
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(self.directory)
        self.max_tokens = int(manifest["max_tokens"])
        self.dense_dim = int(manifest["hidden_size"])

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(self.directory / files[variant]), options, providers=["CPUExecutionProvider"]
        )

    def check_length(self, max_length: int) -> None:
        if max_length > self.max_tokens:
            raise ValueError(
                f"max_length={max_length} exceeds the {self.max_tokens} positions of the ONNX export "
                f"{self.directory}; use max_length <= {self.max_tokens}, or extend the torch model's positions "
                f"(`m3 extend-positions`), fine-tune, and export again"
            )

    def __call__(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        cls_mask: np.ndarray | None,
        *,
        dense: bool,
        sparse: bool,
        colbert: bool,
    ):
        """One padded batch: int64 `[B, L]` ids and mask, `cls_mask` `[B, L]` bool or None (no MCLS).

        Returns `(dense [B, H], sparse [B, L], colbert [B, L-1, D], colbert_mask [B, L-1])`, None where not asked.
        Only the asked outputs are fetched, but onnxruntime runs the whole graph whatever is fetched (seen in its
        profile): a dense-only call still pays for the two heads, under 1% of e5-small's graph.
        """
        if cls_mask is None:
            cls_mask = np.zeros(input_ids.shape, dtype=bool)
        wanted = [name for name, on in (("dense", dense), ("sparse", sparse)) if on]
        if colbert:
            wanted += ["colbert", "colbert_mask"]
        got = dict(
            zip(
                wanted,
                self.session.run(
                    wanted, {"input_ids": input_ids, "attention_mask": attention_mask, "cls_mask": cls_mask}
                ),
                strict=True,
            )
        )
        return got.get("dense"), got.get("sparse"), got.get("colbert"), got.get("colbert_mask")
