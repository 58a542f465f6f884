"""`M3Config`: everything beyond the backbone's own config that a saved M3 model needs to describe itself.

Saved next to the Hugging Face backbone files as `m3_config.json`. FlagEmbedding ignores the file, and a
directory without it (e.g. `BAAI/bge-m3`) loads with the defaults below, which are BGE-M3's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

CONFIG_NAME = "m3_config.json"
FORMAT_VERSION = 1


@dataclass
class M3Config:
    """How the three heads read the backbone, and the lengths the model was built or trained for.

    Attributes:
        pooling: dense vector from the first token (`cls`, BGE-M3) or the mask-weighted `mean`.
        normalize_dense: L2-normalize the dense vector (BGE-M3: yes; scores are then cosines).
        normalize_colbert: L2-normalize each multi-vector (BGE-M3: yes).
        colbert_dim: output size of `colbert_linear`; `None` means the backbone's hidden size.
        query_max_length / passage_max_length: default truncation lengths for encoding.
        position_extension: how the position table was grown, when it was (method, old and new sizes).
        mcls_stride: tokens between the extra CLS tokens of the MCLS inference mode (paper: 256).
        query_instruction / passage_instruction: prefixes the model was trained with (e5: `query: ` /
            `passage: `; BGE-M3: none). `M3Embedder.encode_queries` / `encode_corpus` apply them by default.
        hybrid_weights: (w_dense, w_sparse, w_colbert) the model is served and evaluated with by default
            (chosen on a dev split after training; None: the paper's `short` preset 1 / 0.3 / 1).
        backbone: where the backbone came from (name, family, source), for the model card.
    """

    pooling: Literal["cls", "mean"] = "cls"
    normalize_dense: bool = True
    normalize_colbert: bool = True
    colbert_dim: int | None = None
    query_max_length: int = 512
    passage_max_length: int = 8192
    position_extension: dict[str, Any] | None = None
    mcls_stride: int = 256
    query_instruction: str | None = None
    passage_instruction: str | None = None
    hybrid_weights: tuple[float, float, float] | None = None
    backbone: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"M3Config.pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.colbert_dim is not None and self.colbert_dim <= 0:
            raise ValueError(f"M3Config.colbert_dim must be positive or None, got {self.colbert_dim}")
        if self.hybrid_weights is not None:
            w = tuple(float(x) for x in self.hybrid_weights)
            if len(w) != 3 or any(x < 0 for x in w) or not any(w):
                raise ValueError(
                    f"M3Config.hybrid_weights must be three non-negative numbers, not all 0, got {self.hybrid_weights}"
                )
            self.hybrid_weights = w
        for name in ("query_max_length", "passage_max_length", "mcls_stride"):
            if getattr(self, name) <= 2:
                raise ValueError(f"M3Config.{name} must be > 2, got {getattr(self, name)}")

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> M3Config | None:
        """The saved config of `directory`, or None when it has none (a plain FlagEmbedding/HF directory)."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        version = raw.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{path}: format_version {version} is newer than this m3core understands ({FORMAT_VERSION})"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}")
        return cls(**raw)
