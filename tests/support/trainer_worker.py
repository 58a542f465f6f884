"""Run under torchrun (2 CPU processes, gloo): one batch's gradients through the real `Trainer`.

Usage: torchrun --nproc_per_node 2 tests/support/trainer_worker.py CONFIG OUT_DIR
Dropout is switched off (`eval()`; gradients still flow) so that two configs that should compute the same
function (split-batch or not) can be compared; each rank writes its loss and DDP-averaged gradients.
"""

import sys

import numpy as np
import torch.distributed as dist

from m3core.train.config import TrainConfig
from m3core.train.trainer import Trainer


def main(config: str, out_dir: str) -> None:
    dist.init_process_group("gloo")
    trainer = Trainer(TrainConfig.load(config))
    trainer.model.eval()
    metrics = trainer.forward_backward(next(iter(trainer.sampler)))
    grads = {n: p.grad.numpy() for n, p in trainer.model.named_parameters() if p.grad is not None}
    np.savez(
        f"{out_dir}/rank{dist.get_rank()}.npz",
        loss=metrics["loss"],
        **{f"grad/{k}": v for k, v in grads.items()},
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
