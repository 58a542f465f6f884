"""Dense head: one vector per text, pooled from the last hidden states (no parameters of its own)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_embedding(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    pooling: str = "cls",
    normalize: bool = True,
    cls_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool hidden states into one vector per text.

    Args:
        hidden: `[B, L, H]` last hidden states.
        attention_mask: `[B, L]`, 1 for real tokens.
        pooling: `cls` (first token, BGE-M3) or `mean` (over real tokens).
        normalize: L2-normalize the result.
        cls_mask: `[B, L]` bool, MCLS mode: for a row with two or more marked positions (a text longer than
            one MCLS stride: every inserted CLS), the mean over them is the vector; a row with one mark or none (a
            short text, a query) keeps the model's own pooling, so MCLS never changes a short text's vector — for a
            mean-pooled model (e5) the lone CLS state is not what it was trained to produce.

    Returns:
        `[B, H]`.
    """
    if cls_mask is not None:
        weights = cls_mask.to(hidden.dtype).unsqueeze(-1)  # [B, L, 1]
        n = weights.sum(1)  # [B, 1]
        mcls = (hidden * weights).sum(1) / n.clamp(min=1)
        plain = dense_embedding(hidden, attention_mask, pooling, normalize=False)
        vecs = torch.where(n > 1, mcls, plain)
    elif pooling == "cls":
        vecs = hidden[:, 0]
    elif pooling == "mean":
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        vecs = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    else:
        raise ValueError(f"unknown pooling {pooling!r}: expected 'cls' or 'mean'")
    return F.normalize(vecs, dim=-1) if normalize else vecs
