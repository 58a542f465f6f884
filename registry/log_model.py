"""Log an M3 checkpoint to MLflow as a pyfunc (models-from-code `pyfunc_model.py` + the checkpoint artifact).

With `onnx=True` (the default) the model's ONNX export (`m3core.onnx_export`: fp32 and int8 graphs, tokenizer,
profile) is logged beside the checkpoint as the artifact `onnx`, and the pyfunc serves from it on CPU (see
`registry.pyfunc_model`). The checkpoint stays the source of truth: training, negatives and re-evaluation use it.
"""

from __future__ import annotations

import logging
import tempfile
from importlib import metadata
from pathlib import Path

import mlflow
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Map, ParamSchema, ParamSpec, Schema

from registry.aliases import CHECKPOINT_ARTIFACT, ONNX_ARTIFACT
from registry.pyfunc_model import PARAM_DEFAULTS

logger = logging.getLogger(__name__)

MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")
M3CORE_DIR = Path(__file__).resolve().parent.parent / "m3core"
# What the pyfunc needs at load time (explicit: MLflow's inference costs seconds and guesses).
RUNTIME_PACKAGES = (
    "torch",
    "onnxruntime",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "scipy",
    "pandas",
    "tqdm",
    "mlflow",
)


def signature() -> ModelSignature:
    """Declared params let MLflow check their types before `predict` (see `registry.pyfunc_model` for meanings).

    Input: a list of strings, a one-column DataFrame or a Series (documented in `registry.pyfunc_model`).
    """
    params = ParamSchema(
        [
            ParamSpec("input_type", "string", PARAM_DEFAULTS["input_type"]),  # "query" or "passage"
            ParamSpec("return_dense", "boolean", PARAM_DEFAULTS["return_dense"]),
            ParamSpec("return_sparse", "boolean", PARAM_DEFAULTS["return_sparse"]),
            ParamSpec("return_colbert", "boolean", PARAM_DEFAULTS["return_colbert"]),
            ParamSpec("batch_size", "long", PARAM_DEFAULTS["batch_size"]),
            ParamSpec("max_length", "long", PARAM_DEFAULTS["max_length"]),  # 0: the model's, per side
        ]
    )
    outputs = Schema(
        [
            ColSpec(Array("double"), "dense_vecs", required=False),
            ColSpec(Map("double"), "lexical_weights", required=False),
            ColSpec(Array(Array("double")), "colbert_vecs", required=False),
        ]
    )
    # No input schema on purpose: MLflow's column check turns `[]` into a zero-column frame and rejects it
    # before `predict` runs, where an empty batch should give an empty result. `predict` checks the texts
    # itself (strings, non-empty) and raises MLflow's INVALID_PARAMETER_VALUE with the reason.
    return ModelSignature(inputs=None, outputs=outputs, params=params)


def pip_requirements() -> list[str]:
    """Pinned to what runs here; torch stays a range so a GPU host keeps its CUDA build."""
    out = []
    for name in RUNTIME_PACKAGES:
        version = metadata.version(name)
        out.append(f"{name}>={version.split('+')[0]}" if name == "torch" else f"{name}=={version}")
    return out


def log_m3_model(
    checkpoint: str | Path,
    name: str = "model",
    registered_model_name: str | None = None,
    *,
    onnx: bool = True,
    **kwargs,
):
    """Log `checkpoint` as a pyfunc in the active run (with its ONNX export unless `onnx=False`); returns
    MLflow's `ModelInfo`.

    m3core travels with the model (`code_paths`), so a consumer needs only the pip requirements.
    """
    from m3core.config import M3Config
    from m3core.retrieval.hybrid import PRESETS

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise ValueError(f"{checkpoint}: not a model directory (no config.json)")
    # The profile in the MLmodel metadata: a consumer scoring hybrid retrieval reads the weights the model was
    # chosen to be served with (`mlflow.models.get_model_info(uri).metadata`) without downloading the checkpoint.
    profile = M3Config.load(checkpoint) or M3Config()
    metadata = {
        "pooling": profile.pooling,
        "query_instruction": profile.query_instruction,
        "passage_instruction": profile.passage_instruction,
        "hybrid_weights": list(profile.hybrid_weights or PRESETS["short"]),
        "onnx": onnx,
        **kwargs.pop("metadata", {}),
    }
    with tempfile.TemporaryDirectory(prefix="m3-onnx-") as tmp:
        artifacts = {CHECKPOINT_ARTIFACT: str(checkpoint)}
        if onnx:
            from m3core.onnx_export import export_onnx

            export_onnx(checkpoint, Path(tmp) / ONNX_ARTIFACT, int8=True)
            artifacts[ONNX_ARTIFACT] = str(Path(tmp) / ONNX_ARTIFACT)
        return mlflow.pyfunc.log_model(
            metadata=metadata,
            name=name,
            python_model=str(MODEL_FILE),
            artifacts=artifacts,
            code_paths=[str(M3CORE_DIR)],
            signature=signature(),
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
            **kwargs,
        )
