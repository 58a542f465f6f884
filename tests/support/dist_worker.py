"""Run under torchrun (2 CPU processes, gloo): one training step's loss and gradients with cross-device negatives.

Usage: torchrun --nproc_per_node 2 tests/dist_worker.py MODEL_DIR OUT_DIR CROSS_DEVICE [KD_LOSS]
Each rank writes its loss parts and (after DDP's gradient averaging) its parameter gradients to OUT_DIR.
With KD_LOSS (`kl_div`, `m3_kd_loss`) each query carries teacher scores (`TEACHER`).
"""

import sys

import numpy as np
import torch
import torch.distributed as dist

from m3core.model import M3Model
from m3core.train.losses import M3Loss
from m3core.train.trainer import DualEncoder, batch_scores

GROUP = 2


# per query (positive, negative): similarity-range scores, one query ranking its negative first
TEACHER = [[0.9, 0.4], [0.5, 0.7], [0.8, 0.6], [0.7, 0.1]]


def batch():
    from tests.support import textgen

    ex = textgen.retrieval_pairs(4, seed=11)
    return [e["query"] for e in ex], [t for e in ex for t in (e["pos"][0], e["neg"][0])]


def encode(model, queries, passages, net=None):
    net = net or DualEncoder(model, sub_batch_size=None)
    tok = model.tokenizer
    q = tok(queries, padding=True, return_tensors="pt")
    p = tok(passages, padding=True, return_tensors="pt")
    qo, po = net(q["input_ids"], q["attention_mask"], p["input_ids"], p["attention_mask"], MODES)
    qo["input_ids"], po["input_ids"] = q["input_ids"], p["input_ids"]
    return qo, po


MODES = ("dense", "sparse", "colbert")


def loss_fn(kd: str) -> M3Loss:
    return M3Loss(temperature=0.1, kd_loss=kd, teacher_temperature=0.1)


def step(model, queries, passages, cross, net=None, kd="none", teacher=None):
    """Encode, score and compute the loss (no optimizer): returns the loss parts."""
    qo, po = encode(model, queries, passages, net)
    scores, target, extra = batch_scores(qo, po, MODES, GROUP, True, cross, model.tokenizer.pad_token_id)
    if kd != "none":
        extra |= {"teacher_scores": torch.tensor(teacher), "group_size": GROUP}
    return loss_fn(kd)(scores, target, step=0, **extra)


def main(model_dir: str, out_dir: str, cross: str, kd: str = "none") -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = M3Model.from_pretrained(model_dir).eval()  # eval: no dropout, gradients still flow
    net = torch.nn.parallel.DistributedDataParallel(DualEncoder(model, sub_batch_size=None))
    queries, passages = batch()
    per_q = len(queries) // world
    parts = step(
        model,
        queries[rank * per_q : (rank + 1) * per_q],
        passages[rank * per_q * GROUP : (rank + 1) * per_q * GROUP],
        cross,
        net,
        kd,
        TEACHER[rank * per_q : (rank + 1) * per_q],
    )
    parts["loss"].backward()  # DDP averages the gradients over ranks
    grads = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
    np.savez(
        f"{out_dir}/rank{rank}.npz",
        **{f"part/{k}": float(v.detach()) for k, v in parts.items()},
        **{f"grad/{k}": v for k, v in grads.items()},
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:5])
