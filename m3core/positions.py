"""Longer inputs for backbones with learned absolute positions: grow the position table.

XLM-R has 514 position rows (2 reserved + 512 tokens); BGE-M3 was trained with 8194. A backbone with fewer
positions than the wanted length can be extended here, then fine-tuned (the paper's MLDR data); the new table is
saved with the model and `M3Config.position_extension` records how it was made.

Methods:
- `copy`: tile the learned rows (Longformer's recipe): position k gets row k mod n. Keeps the local structure
  the model learned, so short-range attention patterns carry over.
- `interpolate`: stretch the learned rows linearly over the new range (smooth, but every position moves).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


def position_offset(backbone: nn.Module) -> int:
    """Rows of the position table not used by tokens: RoBERTa-family models reserve `padding_idx + 1`."""
    embeddings = getattr(backbone, "embeddings", None)
    if embeddings is not None and hasattr(embeddings, "create_position_ids_from_input_ids"):
        return int(embeddings.padding_idx) + 1
    return 0


def max_tokens(backbone: nn.Module) -> int:
    """The longest input (special tokens included) the backbone's position table can take."""
    n = getattr(backbone.config, "max_position_embeddings", None)
    if n is None:  # rotary / relative positions: no table to outgrow
        return 1 << 30
    return int(n) - position_offset(backbone)


def extend_positions(backbone: nn.Module, new_max_tokens: int, method: str = "copy") -> dict:
    """Grow `backbone`'s learned position table in place so it takes `new_max_tokens` tokens.

    Returns the record to keep in `M3Config.position_extension`.
    """
    embeddings = getattr(backbone, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, nn.Embedding):
        raise ValueError(
            f"{type(backbone).__name__} has no learned absolute position table (embeddings.position_embeddings); "
            "its positions cannot be extended this way"
        )
    if method not in ("copy", "interpolate"):
        raise ValueError(f"unknown position extension method {method!r}: expected 'copy' or 'interpolate'")
    offset = position_offset(backbone)
    old_rows = table.num_embeddings
    old_tokens = old_rows - offset
    if new_max_tokens <= old_tokens:
        raise ValueError(
            f"the backbone already takes {old_tokens} tokens; asked to extend to {new_max_tokens}"
        )
    new_rows = new_max_tokens + offset

    old = table.weight.data
    learned = old[offset:]  # [old_tokens, H]
    if method == "copy":
        index = torch.arange(new_max_tokens, device=old.device) % old_tokens
        grown = learned[index]
    else:
        # [1, H, T] → linear resample along T
        grown = nn.functional.interpolate(
            learned.float().T.unsqueeze(0), size=new_max_tokens, mode="linear", align_corners=True
        )[0].T.to(old.dtype)
    new_table = nn.Embedding(
        new_rows, old.shape[1], padding_idx=table.padding_idx, device=old.device, dtype=old.dtype
    )
    new_table.weight.data[:offset] = old[:offset]
    new_table.weight.data[offset:] = grown
    embeddings.position_embeddings = new_table

    # Buffers sized by the table (HF registers position_ids / token_type_ids non-persistently).
    for name, fill in (("position_ids", "arange"), ("token_type_ids", "zeros")):
        buf = getattr(embeddings, name, None)
        if isinstance(buf, torch.Tensor):
            fresh = (
                torch.arange(new_rows, device=buf.device)
                if fill == "arange"
                else torch.zeros(new_rows, dtype=buf.dtype, device=buf.device)
            )
            setattr(embeddings, name, nn.Buffer(fresh.expand((1, -1)).to(buf.dtype), persistent=False))
    backbone.config.max_position_embeddings = new_rows
    logger.info("extended position table %d → %d tokens (%s)", old_tokens, new_max_tokens, method)
    return {"method": method, "from_tokens": old_tokens, "to_tokens": new_max_tokens}
