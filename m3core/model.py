"""`M3Model`: a Hugging Face encoder plus the three M3 heads, loaded and saved in FlagEmbedding's layout.

Directory layout (what `save_pretrained` writes and `from_pretrained` reads):

    config.json, model.safetensors, tokenizer files   the backbone, as `AutoModel` / `AutoTokenizer` save it
    colbert_linear.pt                                 state dict of Linear(hidden, colbert_dim)
    sparse_linear.pt                                  state dict of Linear(hidden, 1)
    m3_config.json                                    `M3Config` (ours; FlagEmbedding ignores it)

A `BAAI/bge-m3` directory loads unchanged (no `m3_config.json`: BGE-M3's defaults apply), and a directory saved
here loads in FlagEmbedding's `BGEM3FlagModel`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerFast

from m3core.config import CONFIG_NAME, M3Config
from m3core.heads import ColbertHead, SparseHead, dense_embedding, special_token_ids
from m3core.positions import extend_positions, max_tokens
from m3core.profiles import PROFILES, detect_family

logger = logging.getLogger(__name__)

COLBERT_FILE = "colbert_linear.pt"
SPARSE_FILE = "sparse_linear.pt"
# transformers 5 writes `TokenizersBackend`, which transformers 4 (FlagEmbedding) cannot load; this class name
# loads the same tokenizer.json in both.
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


@dataclass
class M3Output:
    """One forward pass, all three representations (shapes for a batch of B texts of L tokens).

    dense: `[B, H]`; sparse: `[B, L]` token weights (0 on padding and special tokens);
    colbert: `[B, L-1, D]` (no CLS; zero rows where `colbert_mask` is False); colbert_mask: `[B, L-1]`.
    """

    dense: torch.Tensor | None
    sparse: torch.Tensor | None
    colbert: torch.Tensor | None
    colbert_mask: torch.Tensor | None
    input_ids: torch.Tensor


def has_trained_heads(name_or_path: str | os.PathLike) -> bool:
    """Whether the model directory (or Hub id, via the local cache) has both head files.

    Without them `from_pretrained` initializes the heads at random (a plain backbone), so its sparse, ColBERT
    and hybrid modes say nothing about the model: evaluations and promotion gates use its dense mode only.
    """
    try:
        directory = resolve_model_dir(name_or_path)
    except ValueError as err:  # e.g. a Hub id not in the offline cache
        logger.warning("cannot look into model %s (%s): treating it as a plain backbone", name_or_path, err)
        return False
    return (directory / COLBERT_FILE).is_file() and (directory / SPARSE_FILE).is_file()


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A local directory as is; otherwise a Hugging Face Hub id, downloaded (or taken from the cache)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{name_or_path}: is a file; expected a model directory or a Hub id")
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id=str(name_or_path), ignore_patterns=["*.onnx*", "onnx/*", "*.h5", "*.msgpack"]
            )
        )
    except Exception as err:  # offline, unknown id, auth: one clear message
        raise ValueError(
            f"{name_or_path}: not a local directory and not downloadable from the Hub ({err})"
        ) from err


class M3Model(nn.Module):
    """Backbone + dense/sparse/multi-vector heads. `forward` returns all three from one encoder pass."""

    def __init__(self, backbone: nn.Module, tokenizer, config: M3Config | None = None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config or M3Config()
        hidden = backbone.config.hidden_size
        self.sparse_head = SparseHead(hidden, special_token_ids(tokenizer))
        self.colbert_head = ColbertHead(
            hidden, self.config.colbert_dim, normalize=self.config.normalize_colbert
        )
        self.config.colbert_dim = self.colbert_head.dim

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        dense: bool = True,
        sparse: bool = True,
        colbert: bool = True,
        cls_mask: torch.Tensor | None = None,
    ) -> M3Output:
        """Encode a padded batch. `cls_mask` (`[B, L]` bool) turns on MCLS pooling for the dense vector."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state  # [B, L, H]
        dense_vecs = sparse_w = colbert_vecs = colbert_mask = None
        if dense:
            dense_vecs = dense_embedding(
                hidden, attention_mask, self.config.pooling, self.config.normalize_dense, cls_mask=cls_mask
            )
        if sparse:
            sparse_w = self.sparse_head(hidden, input_ids, attention_mask)
        if colbert:
            drop = None
            if cls_mask is not None:
                drop = cls_mask.clone()
                drop[:, 0] = False
            colbert_vecs, colbert_mask = self.colbert_head(hidden, attention_mask, drop=drop)
        return M3Output(dense_vecs, sparse_w, colbert_vecs, colbert_mask, input_ids)

    # ------------------------------------------------------------------ lengths
    @property
    def max_tokens(self) -> int:
        """Longest input (special tokens included) the backbone's positions allow."""
        return max_tokens(self.backbone)

    def check_length(self, max_length: int) -> None:
        if max_length > self.max_tokens:
            raise ValueError(
                f"max_length={max_length} exceeds the {self.max_tokens} positions of this backbone "
                f"({type(self.backbone).__name__}); use max_length <= {self.max_tokens}, or extend the positions: "
                f"`m3 extend-positions MODEL_DIR OUT_DIR --max-length {max_length}` "
                f"(M3Model.extend_positions({max_length})) and fine-tune on long inputs"
            )

    def extend_positions(self, new_max_tokens: int, method: str = "copy") -> None:
        """Grow the learned position table to `new_max_tokens` (see `m3core.positions`)."""
        record = extend_positions(self.backbone, new_max_tokens, method)
        previous = self.config.position_extension
        if previous:  # keep the original size through repeated extensions
            record["from_tokens"] = previous.get("from_tokens", record["from_tokens"])
        self.config.position_extension = record
        self.tokenizer.model_max_length = new_max_tokens

    def set_attention_dropout(self, p: float) -> int:
        """Set the dropout on the attention probabilities of every self-attention layer to `p`; returns how many.

        For this run only: the saved `config.json` keeps the backbone's value (it matters in training only). With
        `p = 0` SDPA can take its fused kernel instead of materializing the `[B, heads, L, L]` probabilities:
        measured at L = 2048 on CPU (one layer, forward + backward), dropout 0.1 took 2.92 s and 792 MiB, 0 took
        1.15 s and 39 MiB. The layers are found by their `dropout` module (the BERT / XLM-R family's layout,
        `*SelfAttention.dropout`); a backbone without one is an error, not a silent no-op.
        """
        if not 0.0 <= p < 1.0:
            raise ValueError(f"attention dropout must be in [0, 1), got {p}")
        layers = [
            module
            for module in self.backbone.modules()
            if type(module).__name__.endswith("SelfAttention")
            and isinstance(getattr(module, "dropout", None), nn.Dropout)
        ]
        if not layers:
            raise ValueError(
                f"attention_dropout: no self-attention dropout found in {type(self.backbone).__name__} "
                "(supported: the BERT / XLM-R family's `*SelfAttention.dropout`); leave attention_dropout unset"
            )
        for module in layers:
            module.dropout.p = p
        return len(layers)

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        config: M3Config | None = None,
        trust_remote_code: bool = False,
        dtype: torch.dtype | None = None,
        attn_implementation: str | None = "sdpa",
        fresh_heads: bool = False,
    ) -> M3Model:
        """Load a model directory (ours, FlagEmbedding's, `BAAI/bge-m3`) or a plain HF encoder (fresh heads).

        `config` overrides the saved `m3_config.json`. Heads load with `weights_only=True`; remote code runs
        only when `trust_remote_code=True`. A directory with one head file but not the other, or a head file that
        does not load, is a ValueError naming the file, unless `fresh_heads=True` (both heads start afresh).
        """
        directory = resolve_model_dir(name_or_path)
        saved = M3Config.load(directory)
        cfg = config or saved or _first_load_config(name_or_path, directory)
        colbert_path, sparse_path = directory / COLBERT_FILE, directory / SPARSE_FILE
        present = [p for p in (colbert_path, sparse_path) if p.is_file()]
        if len(present) == 1 and not fresh_heads:
            missing = sparse_path if present[0] == colbert_path else colbert_path
            raise ValueError(
                f"{missing}: missing, while {present[0].name} is there (a partly copied checkpoint?); "
                "restore it, or load with fresh_heads=True to start both heads afresh"
            )
        heads = len(present) == 2 and not fresh_heads
        colbert_state = _load_head(colbert_path) if heads else None
        sparse_state = _load_head(sparse_path) if heads else None
        if colbert_state is not None and cfg.colbert_dim is None:
            cfg = replace(cfg, colbert_dim=int(colbert_state["weight"].shape[0]))

        backbone = _load_backbone(directory, trust_remote_code, dtype, attn_implementation)
        tokenizer = _load_tokenizer(directory, trust_remote_code)
        model = cls(backbone, tokenizer, cfg)
        if heads:
            for path, head, state in (
                (colbert_path, model.colbert_head, colbert_state),
                (sparse_path, model.sparse_head, sparse_state),
            ):
                try:
                    head.linear.load_state_dict(state)
                except (RuntimeError, KeyError, TypeError) as err:
                    first = str(err).strip().splitlines()[0]
                    raise ValueError(f"{path}: does not fit this model's head ({first})") from None
        else:
            logger.warning(
                "%s: %s: the sparse and ColBERT heads are freshly initialized (train before use)",
                directory,
                "fresh heads asked for"
                if fresh_heads
                else f"no {COLBERT_FILE}/{SPARSE_FILE} (a plain backbone)",
            )
        if dtype is not None:
            model.to(dtype)
        model.name_or_path = str(name_or_path)
        return model

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the FlagEmbedding layout + `m3_config.json` to `directory` (created if needed)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.backbone.state_dict().items()}
        self.backbone.save_pretrained(out, state_dict=state)
        self.tokenizer.save_pretrained(out)
        _make_tokenizer_config_portable(out)
        torch.save(_cpu_state(self.colbert_head.linear), out / COLBERT_FILE)
        torch.save(_cpu_state(self.sparse_head.linear), out / SPARSE_FILE)
        self.config.save(out)
        return out


def _load_head(path: Path) -> dict:
    """A head's state dict (`weights_only`: a pickle in it cannot run code); ValueError naming a bad file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or a pickle weights_only refuses
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a loadable head file ({first})") from None
    if not isinstance(state, dict) or "weight" not in state:
        raise ValueError(f"{path}: not a head's state dict (expected a mapping with 'weight')")
    return state


def _first_load_config(name_or_path: str | os.PathLike, directory: Path) -> M3Config:
    """The config of a directory without `m3_config.json`: its known family's profile, else BGE-M3's defaults."""
    family = detect_family(str(name_or_path), directory)
    if family is None:
        return M3Config()
    logger.info("%s: no %s; using the %s profile %s", directory, CONFIG_NAME, family, PROFILES[family])
    return M3Config(**PROFILES[family], backbone={"name": str(name_or_path), "family": family})


def _load_backbone(
    directory: Path, trust_remote_code: bool, dtype, attn_implementation: str | None
) -> nn.Module:
    """`AutoModel` without the unused BERT-style pooler where the architecture allows, SDPA where supported."""
    kwargs = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    attempts = [
        {"attn_implementation": attn_implementation, "add_pooling_layer": False},
        {"attn_implementation": attn_implementation},
        {},
    ]
    for i, extra in enumerate(attempts):
        extra = {k: v for k, v in extra.items() if v is not None}
        try:
            return AutoModel.from_pretrained(directory, **kwargs, **extra)
        except (TypeError, ValueError, ImportError) as err:
            # Architectures without a pooler flag or without SDPA: retry with fewer options.
            if i == len(attempts) - 1:
                raise
            logger.debug("AutoModel.from_pretrained(%s) failed with %s; retrying without them", extra, err)
    raise AssertionError("unreachable")


def _load_tokenizer(directory: Path, trust_remote_code: bool):
    """The tokenizer exactly as `tokenizer.json` describes it, when the directory has one.

    transformers 5's model-specific classes (e.g. `XLMRobertaTokenizer`) rebuild the normalizer and pre-tokenizer
    in code instead of reading them from `tokenizer.json`; for XLM-R (BGE-M3) that drops the final "▁" token that
    the shipped file, and FlagEmbedding on transformers 4, give a text ending in whitespace, and `save_pretrained`
    would then write the rebuilt pipeline. The generic fast class keeps the file's pipeline as is.
    """
    if (directory / "tokenizer.json").is_file() and not trust_remote_code:
        return PreTrainedTokenizerFast.from_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous().cpu() for k, v in module.state_dict().items()}


def _make_tokenizer_config_portable(directory: Path) -> None:
    path = directory / "tokenizer_config.json"
    if not path.is_file() or not (directory / "tokenizer.json").is_file():
        return
    cfg = json.loads(path.read_text())
    if cfg.get("tokenizer_class") in (None, "TokenizersBackend"):
        cfg["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
        path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
