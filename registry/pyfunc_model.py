"""The M3 model as an MLflow pyfunc — a *models-from-code* file: MLflow stores this file, not a pickle.

Input: a list of strings, a one-column DataFrame, or a Series (an empty one gives an empty DataFrame).
Params (declared in the signature, so MLflow validates their types):
- `input_type` (str, `"query"`): `"query"` encodes with `M3Embedder.encode_queries`, `"passage"` with
  `encode_corpus`, so the model's profile applies (its `query_instruction` / `passage_instruction` prefixes from
  `m3_config.json`, e5 style `query: ` / `passage: `) and callers need not know it.
- `return_dense` (bool, True), `return_sparse` (bool, False), `return_colbert` (bool, False), `batch_size`
  (int, 32).
- `max_length` (int, 0): truncation in tokens; 0 means the model's own length for the side (its query or passage
  max length), which is what it was trained for.
Output: a DataFrame, one row per text, with the asked-for columns:
`dense_vecs` (list[float], L2-normalized), `lexical_weights` (dict token_id → weight, weights > 0 only),
`colbert_vecs` (list[list[float]], one vector per token but the first).
Bad input (an empty or non-string text, an unknown `input_type`, impossible lengths) raises an
`MlflowException` with error code INVALID_PARAMETER_VALUE (HTTP 400 when served) saying why.
The checkpoint directory is the artifact `checkpoint` (FlagEmbedding's layout: loadable by `BGEM3FlagModel` too).

Backend, chosen at load time by the environment variable `M3_PYFUNC_BACKEND`:
- `auto` (default): the ONNX export (artifact `onnx`, fp32: the same outputs as torch to ~1e-6) on a machine
  without a GPU when the version was logged with one; else the checkpoint in torch (GPU or CPU);
- `torch`; `onnx` (fp32); `onnx-int8` (the int8 graph: ~2x faster on CPU, at a small quality cost — see
  the model card or the issue's measurements before serving it).
"""

from __future__ import annotations

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

INPUT_TYPES = ("query", "passage")
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
PARAM_DEFAULTS = {
    "input_type": "query",
    "return_dense": True,
    "return_sparse": False,
    "return_colbert": False,
    "batch_size": 32,
    "max_length": 0,  # 0: the model's query or passage max length
}
COLUMNS = (
    ("return_dense", "dense_vecs"),
    ("return_sparse", "lexical_weights"),
    ("return_colbert", "colbert_vecs"),
)


def invalid(reason: str) -> MlflowException:
    return MlflowException(reason, error_code=INVALID_PARAMETER_VALUE)


def input_texts(model_input) -> list:
    """The texts of any accepted input shape, not yet validated."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] != 1:
            raise invalid(f"expected one column of texts, got columns {list(model_input.columns)}")
        return model_input.iloc[:, 0].tolist()
    if isinstance(model_input, pd.Series):
        return model_input.tolist()
    if isinstance(model_input, str):
        return [model_input]
    if model_input is None or isinstance(model_input, (bytes, dict)):
        raise invalid(f"expected a list of strings, got {type(model_input).__name__}")
    try:
        return list(model_input)
    except TypeError:
        raise invalid(f"expected a list of strings, got {type(model_input).__name__}") from None


class M3PyFunc(PythonModel):
    def load_context(self, context) -> None:
        import os

        import torch

        from m3core import M3Embedder

        backend = os.environ.get("M3_PYFUNC_BACKEND", "auto")
        if backend not in BACKENDS:
            raise ValueError(f"M3_PYFUNC_BACKEND={backend!r}: expected one of {list(BACKENDS)}")
        onnx_dir = context.artifacts.get(
            "onnx"
        )  # registry.aliases.ONNX_ARTIFACT (this file imports no registry)
        if backend == "auto":
            backend = "onnx" if onnx_dir and not torch.cuda.is_available() else "torch"
        if backend == "torch":
            self.embedder = M3Embedder(context.artifacts["checkpoint"], show_progress=False)
        elif onnx_dir is None:
            raise ValueError(
                f"M3_PYFUNC_BACKEND={backend}: this model version was logged without its ONNX export; "
                "use torch, or register it again with the ONNX export on"
            )
        else:
            variant = "int8" if backend == "onnx-int8" else "fp32"
            self.embedder = M3Embedder(onnx_dir, backend="onnx", onnx_variant=variant, show_progress=False)
        self.backend = backend if backend == "torch" else f"onnx-{variant}"

    def predict(self, context, model_input, params: dict | None = None):
        import pandas as pd

        p = {**PARAM_DEFAULTS, **(params or {})}
        if p["input_type"] not in INPUT_TYPES:
            raise invalid(f"input_type must be one of {list(INPUT_TYPES)}, got {p['input_type']!r}")
        columns = [column for flag, column in COLUMNS if p[flag]]
        if not columns:
            raise invalid(
                "nothing to encode: set at least one of return_dense, return_sparse, return_colbert"
            )
        if int(p["batch_size"]) < 1:
            raise invalid(f"batch_size must be >= 1, got {p['batch_size']}")
        if int(p["max_length"]) < 0:
            raise invalid(f"max_length must be > 0 (or 0 for the model's own), got {p['max_length']}")
        texts = input_texts(model_input)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise invalid(f"input[{i}] is {type(text).__name__}, not a string: {text!r:.80}")
            if not text.strip():
                raise invalid(f"input[{i}] is an empty string")
        if not texts:
            return pd.DataFrame({column: [] for column in columns})
        encode = self.embedder.encode_queries if p["input_type"] == "query" else self.embedder.encode_corpus
        kwargs = {
            "batch_size": int(p["batch_size"]),
            "return_dense": bool(p["return_dense"]),
            "return_sparse": bool(p["return_sparse"]),
            "return_colbert_vecs": bool(p["return_colbert"]),
        }
        if int(p["max_length"]) > 0:  # else encode_queries / encode_corpus use the side's own length
            kwargs["max_length"] = int(p["max_length"])
        try:
            out = encode(texts, **kwargs)
        except ValueError as err:  # the embedder's input checks (e.g. a length beyond the positions)
            raise invalid(str(err)) from err
        data = {}
        if p["return_dense"]:
            data["dense_vecs"] = [v.tolist() for v in out["dense_vecs"]]
        if p["return_sparse"]:
            data["lexical_weights"] = out["lexical_weights"]
        if p["return_colbert"]:
            data["colbert_vecs"] = [v.tolist() for v in out["colbert_vecs"]]
        return pd.DataFrame(data)


mlflow.models.set_model(M3PyFunc())
