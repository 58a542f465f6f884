"""Sparse head: one non-negative weight per token, `relu(Linear(hidden, 1))`.

A text's lexical representation is {token id: max weight over its occurrences}. The head only ever produces
`[B, L]` token weights; the vocabulary-sized `[B, L, V]` tensor the reference builds during training is never
materialized (scoring maps token ids to a batch-local vocabulary instead, see `m3core.scoring`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn


def special_token_ids(tokenizer) -> list[int]:
    """Ids that never get a lexical weight: CLS, EOS, PAD and UNK (the same four as BGE-M3)."""
    ids = []
    for name in ("cls_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            ids.append(int(value))
    return sorted(set(ids))


class SparseHead(nn.Module):
    """`[B, L, H]` hidden states → `[B, L]` token weights, zero on padding and special tokens."""

    def __init__(self, hidden_size: int, special_ids: Iterable[int] = ()):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        self.register_buffer(
            "special_ids", torch.tensor(sorted(set(special_ids)), dtype=torch.long), persistent=False
        )

    def forward(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        weights = torch.relu(self.linear(hidden)).squeeze(-1)  # [B, L]
        keep = attention_mask.bool() & ~torch.isin(input_ids, self.special_ids)
        return weights * keep.to(weights.dtype)


def weights_to_dicts(weights: np.ndarray, input_ids: np.ndarray) -> list[dict[str, float]]:
    """`[B, L]` token weights and ids → per text `{str(token_id): max weight}`, weights > 0 only.

    >>> w = np.array([[0.0, 0.5, 0.2, 0.7, 0.0]], dtype=np.float32)
    >>> ids = np.array([[0, 42, 7, 42, 2]])
    >>> weights_to_dicts(w, ids)
    [{'7': 0.20000000298023224, '42': 0.699999988079071}]
    """
    out = []
    for row_w, row_ids in zip(weights, input_ids, strict=True):
        keep = row_w > 0
        w, ids = row_w[keep], row_ids[keep]
        order = np.argsort(w, kind="stable")  # ascending: the dict keeps the last (largest) weight per id
        out.append(dict(zip(map(str, ids[order].tolist()), w[order].tolist(), strict=True)))
    return out
