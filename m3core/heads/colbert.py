"""Multi-vector (ColBERT) head: `Linear(hidden, colbert_dim)` on every real token except the first (CLS)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ColbertHead(nn.Module):
    """`[B, L, H]` hidden states → `[B, L-1, D]` token vectors (zero rows on padding) and their `[B, L-1]` mask."""

    def __init__(self, hidden_size: int, colbert_dim: int | None = None, normalize: bool = True):
        super().__init__()
        self.linear = nn.Linear(hidden_size, colbert_dim or hidden_size)
        self.normalize = normalize

    @property
    def dim(self) -> int:
        return self.linear.out_features

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, drop: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`drop` (`[B, L]` bool) removes further positions, e.g. the extra CLS tokens of MCLS."""
        mask = attention_mask[:, 1:].bool()
        if drop is not None:
            mask = mask & ~drop[:, 1:]
        vecs = self.linear(hidden[:, 1:]) * mask.unsqueeze(-1).to(hidden.dtype)
        if self.normalize:
            vecs = F.normalize(vecs, dim=-1)
        return vecs, mask
