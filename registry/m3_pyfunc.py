"""The M3 model as an MLflow pyfunc — a *models-from-code* file: MLflow stores this file, not a pickle.

Input: a list of strings, a one-column DataFrame, or a Series. Params (declared in the signature, so MLflow
validates their types): `return_dense` (bool, True), `return_sparse` (bool, False), `return_colbert` (bool,
False), `batch_size` (int, 32), `max_length` (int, 512).
Output: a DataFrame, one row per text, with the asked-for columns:
`dense_vecs` (list[float], L2-normalized), `lexical_weights` (dict token_id → weight, weights > 0 only),
`colbert_vecs` (list[list[float]], one vector per token but the first).
The checkpoint directory is the artifact `checkpoint` (FlagEmbedding's layout: loadable by `BGEM3FlagModel` too).
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel

PARAM_DEFAULTS = {
    "return_dense": True,
    "return_sparse": False,
    "return_colbert": False,
    "batch_size": 32,
    "max_length": 512,
}


class M3PyFunc(PythonModel):
    def load_context(self, context) -> None:
        from m3core import M3Embedder

        self.embedder = M3Embedder(context.artifacts["checkpoint"], show_progress=False)

    def predict(self, context, model_input, params: dict | None = None):
        import pandas as pd

        p = {**PARAM_DEFAULTS, **(params or {})}
        if isinstance(model_input, pd.DataFrame):
            if model_input.shape[1] != 1:
                raise ValueError(f"expected one column of texts, got columns {list(model_input.columns)}")
            texts = model_input.iloc[:, 0].tolist()
        elif isinstance(model_input, pd.Series):
            texts = model_input.tolist()
        elif isinstance(model_input, str):
            texts = [model_input]
        else:
            texts = list(model_input)
        out = self.embedder.encode(
            texts,
            batch_size=int(p["batch_size"]),
            max_length=int(p["max_length"]),
            return_dense=bool(p["return_dense"]),
            return_sparse=bool(p["return_sparse"]),
            return_colbert_vecs=bool(p["return_colbert"]),
        )
        columns = {}
        if p["return_dense"]:
            columns["dense_vecs"] = [v.tolist() for v in out["dense_vecs"]]
        if p["return_sparse"]:
            columns["lexical_weights"] = out["lexical_weights"]
        if p["return_colbert"]:
            columns["colbert_vecs"] = [v.tolist() for v in out["colbert_vecs"]]
        return pd.DataFrame(columns)


mlflow.models.set_model(M3PyFunc())
