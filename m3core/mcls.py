"""MCLS (multiple CLS): a long-document inference mode that needs no long-document training.

A CLS token is inserted every `stride` tokens (paper: 256) and the dense vector is the mean of the hidden states
of all CLS tokens, so each span of text has a summary token near it. Only the dense vector changes meaning; the
inserted CLS tokens get no lexical weight (CLS is a special id) and no ColBERT vector.
"""

from __future__ import annotations


def insert_cls(ids: list[int], cls_id: int, stride: int, max_tokens: int) -> tuple[list[int], list[int]]:
    """Put a CLS before every `stride`-token chunk of `ids`' body (`ids` starts with CLS); cap at `max_tokens`.

    Returns the new ids and the positions of all CLS tokens.

    >>> insert_cls([0, 5, 6, 7, 8, 2], cls_id=0, stride=2, max_tokens=100)
    ([0, 5, 6, 0, 7, 8, 2], [0, 3])
    >>> insert_cls([0, 5, 6, 7, 8, 9, 2], cls_id=0, stride=2, max_tokens=6)
    ([0, 5, 6, 0, 7, 2], [0, 3])
    """
    if stride <= 0:
        raise ValueError(f"MCLS stride must be positive, got {stride}")
    body, last = ids[1:-1], ids[-1]
    out, positions = [ids[0]], [0]
    for start in range(0, len(body), stride):
        if start > 0:
            positions.append(len(out))
            out.append(cls_id)
        out.extend(body[start : start + stride])
    out.append(last)
    if len(out) > max_tokens:  # keep the closing token; drop body tokens (and any CLS past the cut)
        out = [*out[: max_tokens - 1], last]
        positions = [p for p in positions if p < max_tokens - 1]
    return out, positions
