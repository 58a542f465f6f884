"""Unified fine-tuning with self-knowledge distillation (the BGE-M3 recipe).

- `losses.py` — per-mode InfoNCE, ensemble, self-distillation (`M3Loss`)
- `bucket_sampler.py` — length-bucketed batches sized by a token budget (and the random baseline)
- `data.py` — FlagEmbedding JSONL → validated examples → groups
- `distributed.py` — cross-device negatives (all-gather keeping the local gradient)
- `trainer.py` — the loop: split-batch + activation checkpointing, bf16 on GPU, checkpoints and resume
- `config.py` — `TrainConfig`

Run: `m3 train --config FILE` (one process) or `torchrun --nproc_per_node N -m m3core.train --config FILE`.
"""

from m3core.train.config import TrainConfig

__all__ = ["TrainConfig", "train"]


def train(config: TrainConfig, resume_from=None, callbacks=None) -> dict:
    """Run a training job in this process (joining a torchrun process group if launched by torchrun)."""
    from m3core.train.launch import run_training

    return run_training(config, resume_from=resume_from, callbacks=callbacks)
