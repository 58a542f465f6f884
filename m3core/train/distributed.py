"""Cross-device negatives: all-gather embeddings from every rank while keeping the local gradient.

`gather_with_grad` concatenates a tensor from all ranks (padding ragged sequence lengths). Its backward sums the
gradient every rank computed for each shard (an all-reduce, which every backend supports, unlike
reduce-scatter on gloo) and hands each rank the gradient of its own shard. With each rank computing the loss of
its local queries against all gathered passages, and DDP averaging parameter gradients, the result equals a
single process computing the loss on the concatenated batch — `tests/test_train_distributed.py` checks it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.size0 = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.size0
        return grad[start : start + ctx.size0]


def gather_with_grad(tensor: torch.Tensor, pad_value: float = 0) -> torch.Tensor:
    """Concatenate `tensor` (`[n, ...]`, same `n` on every rank) from all ranks along dim 0, gradient kept.

    Dim 1 may differ between ranks (sequence length): it is padded with `pad_value` to the longest first.
    Outside a process group it returns `tensor` unchanged.
    """
    if not is_distributed():
        return tensor
    if tensor.dim() >= 2:
        length = torch.tensor([tensor.shape[1]], device=tensor.device)
        dist.all_reduce(length, op=dist.ReduceOp.MAX)
        extra = int(length.item()) - tensor.shape[1]
        if extra:
            pad = [0, 0] * (tensor.dim() - 2) + [0, extra]
            tensor = F.pad(tensor, pad, value=pad_value)
    return _GatherWithGrad.apply(tensor)
