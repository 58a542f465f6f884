"""Export an M3 model to ONE ONNX graph with all three outputs, plus what is needed to use it: `m3 export-onnx`.

Why: serving without torch, and onnxruntime's dynamic int8 quantization (~2x torch's CPU throughput on
multilingual-e5-small at 2 threads; fp32 runs at torch's speed). No serving stack ships the three M3 outputs
from one graph. The export directory describes itself, so `M3Embedder(OUT_DIR)` encodes with it as with the
torch model (`m3core.onnx_runtime`).

The export directory (OUT_DIR):

    model.onnx             the fp32 graph (weights > 2 GB, e.g. BGE-M3, go to `model.onnx.data` beside it)
    model.int8.onnx        with `--int8`: the same graph, MatMul and embedding (Gather) weights quantized to int8
                           per channel (onnxruntime `quantize_dynamic`; activations quantized at run time),
                           except the few MatMuls whose input has outliers, which stay fp32 (`OUTLIER_RATIO`)
    tokenizer.json, tokenizer_config.json   the model's tokenizer
    m3_config.json         the model's `M3Config` (pooling, prompts, lengths…) with `extra["onnx"]`, the manifest:
                           format `m3-onnx`, graph file per variant, inputs, outputs, `max_tokens`, sizes, the
                           source, the export-time check against torch, and the MatMuls int8 left fp32

The graph (batch B and length L dynamic; L at most the backbone's `max_tokens`, which the embedder checks with
a message naming the limit; past it the position lookup would fail inside onnxruntime):

    inputs   input_ids [B, L] int64, attention_mask [B, L] int64 (1 = real token),
             cls_mask [B, L] bool: all False for plain encoding; MCLS rows mark every CLS position (0 included)
    outputs  dense [B, H] float32 (the model's pooling and normalization; the MCLS mean for rows with 2+ CLS marks),
             sparse [B, L] float32 token weights (0 on padding and special tokens),
             colbert [B, L-1, D] float32 (no CLS; zero rows where colbert_mask is False),
             colbert_mask [B, L-1] bool (real tokens, minus MCLS's extra CLS tokens)

This is `M3Model.forward` with every output on: the graph runs the model's own backbone and heads.

Exporter: `torch.onnx.export(dynamo=True)` (torch.export + onnxscript), opset 23 (see `OPSET`). `torch.isin`
(the sparse head's special-token test) has no ONNX translation in either exporter, so one is given here
(`_isin`). The TorchScript exporter is deprecated, and with such a translation its graph of transformers 5's
XLM-R differs from torch by ~0.2 on the very inputs it traced; the dynamo graph agrees to ~1e-7. Each export is
checked against torch on a batch of another shape than the traced one (padding, an MCLS row) before it is kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from m3core.config import CONFIG_NAME, M3Config
from m3core.heads import dense_embedding
from m3core.model import M3Model, _make_tokenizer_config_portable, has_trained_heads
from m3core.onnx_runtime import FILES, FORMAT, GRAPH_INPUTS, GRAPH_OUTPUTS, onnx_manifest

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
# Opset 23 has a fused `Attention` op, which SDPA exports to. At opset 20 SDPA decomposes into MatMul/Softmax
# with NaN guards over [B, heads, L, L], which onnxruntime ran 1.6x slower than torch at 300 tokens (e5-small, 2
# threads); with `Attention` it runs at torch's speed there.
OPSET = 23
# The export is kept only if the graph agrees with torch this closely on the check batch (measured: ~1e-7).
CHECK_TOLERANCE = 1e-4


class _ExportGraph(nn.Module):
    """`M3Model.forward` with all outputs on and MCLS chosen per row by data (`cls_mask` all False: plain).

    One graph cannot branch on a Python `cls_mask=None`: `dense_embedding` with a `cls_mask` computes both dense
    poolings and picks per row (MCLS for rows with two or more CLS marks), so an all-False mask is plain encoding;
    the extra pooling is one weighted sum over `[B, L, H]`, nothing next to the encoder. The ColBERT head only reads `drop[:, 1:]`, so
    `cls_mask` is its `drop` as is.
    """

    def __init__(self, model: M3Model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, cls_mask):
        m = self.model
        hidden = m.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooling, normalize = m.config.pooling, m.config.normalize_dense
        dense = dense_embedding(hidden, attention_mask, pooling, normalize, cls_mask=cls_mask)
        sparse = m.sparse_head(hidden, input_ids, attention_mask)
        colbert, colbert_mask = m.colbert_head(hidden, attention_mask, drop=cls_mask)
        return dense, sparse, colbert, colbert_mask


def _isin(elements, test_elements, assume_unique: bool = False, invert: bool = False):
    """ONNX for `torch.isin(elements, test_elements)` (none ships with torch 2.13 / onnxscript 0.7): compare
    each element with every test element (a handful of special ids) and take the any."""
    from onnxscript import BOOL, INT32
    from onnxscript import opset18 as op

    last = op.Constant(value_ints=[-1])
    equal = op.Equal(op.Unsqueeze(elements, last), op.Reshape(test_elements, last))
    hit = op.Cast(op.ReduceMax(op.Cast(equal, to=INT32.dtype), last, keepdims=0), to=BOOL.dtype)
    return op.Not(hit) if invert else hit


def _batch(tokenizer, texts: list[str], cls_rows: dict[int, list[int]] | None = None):
    """A padded int64 batch as the embedder builds it, and its cls_mask (`cls_rows`: row → CLS positions)."""
    ids = tokenizer(texts, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = np.full((len(ids), width), pad, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)], mask[row, : len(x)] = x, 1
    cls_mask = np.zeros((len(ids), width), dtype=bool)
    for row, positions in (cls_rows or {}).items():
        cls_mask[row, positions] = True
    return input_ids, mask, cls_mask


TRACE_TEXTS = ["a short text", "a longer text, so that the batch has padding in it"]
# Dynamic int8 quantizes each MatMul's input per tensor at run time (one scale from its min and max), so an input
# whose largest value is hundreds of times its RMS loses nearly all its resolution. Transformers have a few such
# inputs ("massive activations"): on multilingual-e5-small, the GELU outputs feeding the feed-forward down
# projection of layers 0, 4 and 5 reach 180-340x their RMS; every other MatMul input stays under ~100x. Those
# MatMuls stay fp32 (measured on 180 held-out texts against fp32: dense cosine mean 0.9928 → 0.9967, worst
# 0.986 → 0.993, ColBERT token cosine 0.980 → 0.992; a 64x32-token batch 147 → 163 ms, fp32 387 ms).
OUTLIER_RATIO = 120.0
# Calibration for that test: the ratio is a property of the weights (the outliers sit on a few hidden channels,
# whatever the language), so a small fixed multilingual sample finds them; a long text is included because
# some appear only with many tokens.
CALIBRATION_TEXTS = [
    "how do I list the files in a directory",
    "Wie kann ich die Größe einer Datei anzeigen lassen, ohne sie zu öffnen?",
    "¿Cuál es la diferencia entre un proceso y un hilo?",
    "Comment changer les permissions d'un fichier pour un seul utilisateur ?",
    "Как узнать, какой процесс занимает порт?",
    "ファイルの中の文字列を検索する方法",
    "如何压缩一个目录并保留权限",
    "Jak wyświetlić ostatnie wiersze pliku dziennika?",
    " ".join(
        [
            "The command copies files and directories from a source to a destination. By default it does not",
            "copy directories; the recursive option copies a whole tree, keeping the structure. When the",
            "destination exists and is a directory, each source is copied into it under its own name. Options",
            "preserve the mode, ownership and timestamps, follow or keep symbolic links, and ask before any",
            "file is overwritten. Exit status is zero on success and greater than zero if an error occurred.",
        ]
        * 4
    ),
]
CHECK_TEXTS = [
    "river mountain engine",
    "Fluss Berg Motor und Kaffee mit Garten, und noch ein paar Wörter mehr für die Länge",
    "河流 山脉 引擎",
]


# Loggers that narrate every export step at INFO (onnxscript's rewrites, onnx_ir's passes: one line per folded
# initializer, hundreds in a flow's log for one export; torch.onnx's "torchvision is not installed").
EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")


@contextlib.contextmanager
def exporter_logs_at(level: int = logging.WARNING):
    """Raise the exporter's loggers to at least `level` for the block, then restore theirs; with our logger at
    DEBUG (`-v`) they stay as they are."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [log.level for log in loggers]
    if not logger.isEnabledFor(logging.DEBUG):
        for log in loggers:
            log.setLevel(max(log.getEffectiveLevel(), level))
    try:
        yield
    finally:
        for log, old in zip(loggers, levels, strict=True):
            log.setLevel(old)


def export_onnx(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    int8: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export the M3 model in `model_dir` to `out_dir` (layout in the module docstring); returns the manifest.

    `out_dir` must not exist or be empty; `overwrite=True` replaces a previous ONNX export there, never a
    directory that is not one. The new export is built in a hidden sibling and renamed into place, so a failed
    or interrupted export leaves `out_dir` as it was.
    """
    out = Path(out_dir).expanduser()
    _check_out_dir(out, overwrite)
    started = time.perf_counter()
    model = M3Model.from_pretrained(model_dir).float().eval()
    if not hasattr(model.tokenizer, "backend_tokenizer"):
        raise ValueError(f"{model_dir}: the ONNX export needs a fast tokenizer (tokenizer.json)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.exporting-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        manifest = _export_into(model, Path(model_dir), tmp, int8)
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        M3Config.save(replace(model.config, extra={**model.config.extra, "onnx": manifest}), tmp)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "exported %s to %s in %.1f s: %s", model_dir, out, manifest["export_seconds"], manifest["files"]
    )
    return manifest


def _quantize_int8(fp32: Path, target: Path, tokenizer, max_tokens: int) -> dict[str, float]:
    """Write the int8 graph of `fp32` to `target`; returns the MatMuls kept in fp32 (see `OUTLIER_RATIO`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kept = _outlier_matmuls(fp32, tokenizer, max_tokens)
    # Per-channel weight scales, and the embedding Gathers too: on multilingual-e5-small, per channel moved the
    # worst dense cosine to fp32 from 0.981 to 0.994; quantizing the 250k-row embedding table shrank the file
    # 408 → 120 MB at no measurable cost. (ORT's suggested pre-processing changed nothing there, and its
    # symbolic shape inference fails on this graph.)
    quantize_dynamic(
        fp32,
        target,
        op_types_to_quantize=["MatMul", "Gather"],
        nodes_to_exclude=sorted(kept),
        per_channel=True,
        weight_type=QuantType.QInt8,
        # 7-bit weights: on x86 CPUs without VNNI (AVX2 / AVX-512 only; e.g. the AMD EPYC here) onnxruntime's
        # u8s8 kernels can saturate their 16-bit intermediate sums (onnxruntime's quantization docs); measured
        # on the tiny test model there, the worst ColBERT cosine to fp32 was 0.940 with 8-bit weights. An export
        # is served on CPUs we do not know, so it takes the setting that is safe on all of them.
        reduce_range=True,
    )
    return kept


def _outlier_matmuls(fp32: Path, tokenizer, max_tokens: int) -> dict[str, float]:
    """MatMul nodes whose activation input reaches `OUTLIER_RATIO` times its RMS on `CALIBRATION_TEXTS`."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(fp32))  # external data (> 2 GB) is read from beside it
    weights = {init.name for init in graph.graph.initializer}
    inputs = {}  # node → the activation it multiplies (the other side is a weight)
    for node in graph.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and node.input[0] not in weights:
            inputs[node.name] = node.input[0]
    outputs = {o.name for o in graph.graph.output}
    for name in sorted(set(inputs.values()) - outputs):
        graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    del graph
    peak: dict[str, float] = {}
    squares: dict[str, float] = {}
    count: dict[str, int] = {}
    names = sorted(set(inputs.values()))
    for text in CALIBRATION_TEXTS:  # one text per run: no padding rows in the statistics
        ids, mask, cls_mask = (a[:, :max_tokens] for a in _batch(tokenizer, [text]))
        got = session.run(names, {"input_ids": ids, "attention_mask": mask, "cls_mask": cls_mask})
        for name, value in zip(names, got, strict=True):
            x = value.astype(np.float64)
            peak[name] = max(peak.get(name, 0.0), float(np.abs(x).max()))
            squares[name] = squares.get(name, 0.0) + float((x * x).sum())
            count[name] = count.get(name, 0) + x.size
    ratio = {name: peak[name] / max(np.sqrt(squares[name] / count[name]), 1e-12) for name in names}
    return {node: round(float(ratio[x]), 1) for node, x in inputs.items() if ratio[x] >= OUTLIER_RATIO}


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(
                f"{out}: not empty; choose a new directory, or pass --overwrite to replace an export"
            )
        if onnx_manifest(out) is None:
            raise ValueError(
                f"{out}: not empty and not an ONNX export (no {FORMAT} manifest in {CONFIG_NAME}); "
                "--overwrite only replaces a previous export"
            )


def _swap_into_place(tmp: Path, out: Path) -> None:
    """`tmp` becomes `out`; a previous export at `out` (checked by `_check_out_dir`) is removed after the swap."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


def _export_into(model: M3Model, model_dir: Path, out: Path, int8: bool) -> dict[str, Any]:
    """Write the graph(s) and the tokenizer into `out`; returns the manifest (without the export time)."""
    import onnxruntime as ort

    max_tokens = model.max_tokens
    batch = torch.export.Dim("batch")
    length = torch.export.Dim("length", max=min(max_tokens, 1 << 20))
    dims = {name: {0: batch, 1: length} for name in GRAPH_INPUTS}
    example = tuple(torch.from_numpy(a) for a in _batch(model.tokenizer, TRACE_TEXTS))
    with warnings.catch_warnings(), exporter_logs_at():
        # Known, harmless: pytree's LeafSpec deprecation, and a note that batch/length keep their names.
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"# The axis name", category=UserWarning)
        try:
            program = torch.onnx.export(
                _ExportGraph(model).eval(),
                example,
                dynamo=True,
                input_names=list(GRAPH_INPUTS),
                output_names=list(GRAPH_OUTPUTS),
                dynamic_shapes=dims,
                custom_translation_table={torch.ops.aten.isin.Tensor_Tensor: _isin},
                opset_version=OPSET,
                verbose=False,
            )
        except Exception as err:  # an architecture the exporter cannot take: one line; the report with -v
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ValueError(
                f"{model_dir}: torch.onnx.export failed ({type(err).__name__}: {first}); -v shows its report"
            ) from err
    fp32 = out / FILES["fp32"]
    with exporter_logs_at():
        program.save(fp32)  # weights over 2 GB go to `model.onnx.data` (ONNX's protobuf limit)
    files = {"fp32": FILES["fp32"]}

    # Check: a batch of another shape than the traced one, with padding and an MCLS row.
    ids, mask, cls_mask = _batch(model.tokenizer, CHECK_TEXTS, cls_rows={1: [0, 5]})
    ids[1, 5] = model.tokenizer.cls_token_id
    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    got = session.run(list(GRAPH_OUTPUTS), {"input_ids": ids, "attention_mask": mask, "cls_mask": cls_mask})
    with torch.inference_mode():
        want = _ExportGraph(model)(*(torch.from_numpy(a) for a in (ids, mask, cls_mask)))
    diffs = {}
    for name, g, w in zip(GRAPH_OUTPUTS, got, want, strict=True):
        diffs[name] = float(np.abs(g.astype(np.float32) - w.numpy().astype(np.float32)).max())
    if max(diffs.values()) > CHECK_TOLERANCE:
        raise ValueError(
            f"{model_dir}: the exported graph disagrees with torch (max abs diff per output {diffs}); not kept"
        )
    kept_fp32: dict[str, float] = {}
    if int8:
        kept_fp32 = _quantize_int8(fp32, out / FILES["int8"], model.tokenizer, max_tokens)
        files["int8"] = FILES["int8"]

    model.tokenizer.save_pretrained(out)
    _make_tokenizer_config_portable(out)
    return {
        "format": FORMAT,
        "version": MANIFEST_VERSION,
        "files": files,
        "inputs": list(GRAPH_INPUTS),
        "outputs": list(GRAPH_OUTPUTS),
        "max_tokens": max_tokens,
        "hidden_size": int(model.backbone.config.hidden_size),
        "colbert_dim": int(model.colbert_head.dim),
        "opset": int(program.model.opset_imports[""]),
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "source": str(model_dir),
        "trained_heads": has_trained_heads(model_dir),
        "check_max_abs_diff": diffs,
        # int8 only: the MatMuls left in fp32 (node → its input's max/rms on the calibration texts)
        "int8_fp32_matmuls": kept_fp32,
    }
