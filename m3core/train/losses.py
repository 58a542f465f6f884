"""The M3 training objective: per-mode InfoNCE, the ensemble, and self-knowledge distillation.

Given raw relevance scores of each query against the batch's passages (its own group: 1 positive + hard
negatives, plus every other query's group as in-batch negatives):

    L_m   = InfoNCE(s_m / τ)                     m ∈ {dense, sparse, colbert}, and the ensemble
    s_int = w1·s_dense + w2·s_lex + w3·s_mul     (defaults 1, 0.3, 1)
    L     = (λ1·L_dense + λ2·L_lex + λ3·L_mul + L_int) / 4          (λ defaults 1, 0.1, 1)
    L'_m  = −Σ softmax(s_int / T).detach() · log softmax(s_m / T)   (self-distillation: the ensemble teaches;
                                                                     T = τ as in the paper, or softer)
    L'    = (λ1·L'_dense + λ2·L'_lex + λ3·L'_mul) / 3
    total = (L + L') / 2   once `step >= self_distill_start_step`, otherwise L

Why distil from the ensemble: the three modes make different mistakes, so their combination is a better
teacher than any one of them; the sparse head in particular learns much more from these soft targets than from
the hard labels (paper, Table 8). The warm-up lets the heads become sensible before they teach.

Why T may exceed τ: at τ = 0.02 a pretrained encoder's ensemble already separates the positive from its hard
negatives by several logits, so softmax(s_int / τ) is nearly one-hot and L' repeats the hard labels of L. A softer
teacher (Hinton's distillation temperature, on teacher and student alike) passes on how the ensemble ranks the
negatives, which is the knowledge a fresh sparse head lacks.

Everything here works on score matrices, so the loss is testable with small hand-made tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from m3core.modes import OUTPUTS
from m3core.train.config import KdLoss


def info_nce(scores: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of `scores / τ` (`[B, N]`) against the positive's column `target` (`[B]`)."""
    return F.cross_entropy(scores / temperature, target)


def soft_cross_entropy(scores: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """−Σ teacher · log softmax(scores / τ), averaged over rows (the self-distillation term)."""
    return -(teacher_probs * torch.log_softmax(scores / temperature, dim=-1)).sum(-1).mean()


def group_scores(scores: torch.Tensor, target: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each query's scores against its own group only: the G columns from its positive's column `target` on.

    Works for every score layout the trainer makes: in-batch `[B, B·G]`, cross-device `[B, W·B·G]` (the targets
    carry the rank offset) and no-in-batch `[B, G]` (targets 0).
    """
    cols = target.unsqueeze(1) + torch.arange(group_size, device=scores.device)
    return scores.gather(1, cols)


def kl_div_loss(
    scores: torch.Tensor, target: torch.Tensor, teacher_probs: torch.Tensor, has_teacher: torch.Tensor,
    group_size: int, temperature: float,
) -> torch.Tensor:  # fmt: skip
    """FlagEmbedding's `kl_div` KD term: −Σ_j p_j · log softmax(s_group / τ)_j over each query's own group,
    averaged over the queries that have teacher scores (0 when none has)."""
    if not bool(has_teacher.any()):
        return scores.new_zeros(())
    own = group_scores(scores, target, group_size)[has_teacher]
    return soft_cross_entropy(own, teacher_probs[has_teacher], temperature)


def m3_kd_loss(
    scores: torch.Tensor,
    target: torch.Tensor,
    teacher_probs: torch.Tensor,
    group_size: int,
    temperature: float,
) -> torch.Tensor:
    """FlagEmbedding's `m3_kd_loss` (BGE-M3's default KD): listwise cross-entropy with teacher-weighted positives.

    Each of the query's G passages is in turn treated as the positive of an InfoNCE over all columns, weighted by
    the teacher's probability of it; passages already used as the positive are masked out of the later terms:
        L = Σ_i mean_b p_{b,i} · CE(s_b / τ with columns target_b + 0..i−1 masked, target_b + i)
    It replaces the InfoNCE (with p = one-hot on the positive it is exactly InfoNCE, which is how queries without
    teacher scores enter).
    """
    z = scores / temperature
    mask = torch.zeros_like(z)
    loss = z.new_zeros(())
    for i in range(group_size):
        col = target + i
        loss = loss + (teacher_probs[:, i] * F.cross_entropy(z + mask, col, reduction="none")).mean()
        mask = mask.scatter(1, col.unsqueeze(1), torch.finfo(z.dtype).min)
    return loss


KD_LOSSES: tuple[str, ...] = get_args(KdLoss)


class M3Loss(nn.Module):
    """Unified M3 loss with self-distillation; returns every named part (for logging) and `loss`.

    Args:
        temperature: τ for every softmax (paper/FlagEmbedding: 0.02).
        ensemble_weights: (w_dense, w_sparse, w_colbert) of the ensemble score s_int.
        mode_weights: (λ_dense, λ_sparse, λ_colbert) of the per-mode losses.
        self_distill: add L' (the ensemble teaches each mode).
        self_distill_start_step: first step that uses L' (warm-up of the heads before).
        modes: the heads trained; `("dense",)` is the dense-only (unsupervised pre-fine-tuning) stage, where
            the loss is just L_dense.
        kd_loss: knowledge distillation from external teacher scores (`pos_scores`/`neg_scores`): `none` (the
            scores are not used), `kl_div` (InfoNCE + a soft-target term over each query's own group) or
            `m3_kd_loss` (listwise CE with teacher-weighted positives, BGE-M3's; replaces InfoNCE). Applied to
            every trained mode and the ensemble, as FlagEmbedding does.
        teacher_temperature: softmax temperature of the teacher scores (FlagEmbedding: 1, for reranker logits;
            similarity-range scores such as the miner's need one near τ, see `TrainConfig.teacher_temperature`).
        self_distill_temperature: T of L' (teacher and student); None: τ (the paper's).
        self_distill_weights: (λ'_dense, λ'_sparse, λ'_colbert) of L''s terms; None: `mode_weights` (the paper's).
            The heads' own parameters are trained by Adam, which is blind to a loss's scale, so what a weight
            changes for a head is the mix of hard labels (L) and the teacher (L') it learns from.
    """

    def __init__(
        self,
        temperature: float = 0.02,
        ensemble_weights: Sequence[float] = (1.0, 0.3, 1.0),
        mode_weights: Sequence[float] = (1.0, 0.1, 1.0),
        self_distill: bool = True,
        self_distill_start_step: int = 0,
        modes: Sequence[str] = OUTPUTS,
        kd_loss: str = "none",
        teacher_temperature: float = 1.0,
        self_distill_temperature: float | None = None,
        self_distill_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        if temperature <= 0 or teacher_temperature <= 0:
            raise ValueError("temperatures must be positive")
        if len(ensemble_weights) != 3 or len(mode_weights) != 3:
            raise ValueError("ensemble_weights and mode_weights take three values: (dense, sparse, colbert)")
        unknown = set(modes) - set(OUTPUTS)
        if unknown or not modes:
            raise ValueError(f"modes must be a non-empty subset of {OUTPUTS}, got {tuple(modes)}")
        self.temperature = temperature
        self.ensemble_weights = dict(zip(OUTPUTS, ensemble_weights, strict=True))
        self.mode_weights = dict(zip(OUTPUTS, mode_weights, strict=True))
        if self_distill_weights is not None and len(self_distill_weights) != 3:
            raise ValueError("self_distill_weights takes three values: (dense, sparse, colbert)")
        self.self_distill_weights = (
            self.mode_weights
            if self_distill_weights is None
            else dict(zip(OUTPUTS, self_distill_weights, strict=True))
        )
        self.self_distill = self_distill
        self.self_distill_start_step = self_distill_start_step
        self.modes = tuple(m for m in OUTPUTS if m in modes)
        if kd_loss not in KD_LOSSES:
            raise ValueError(f"kd_loss must be one of {KD_LOSSES}, got {kd_loss!r}")
        self.kd_loss = kd_loss
        self.teacher_temperature = teacher_temperature
        if self_distill_temperature is not None and self_distill_temperature <= 0:
            raise ValueError("self_distill_temperature must be positive")
        self.self_distill_temperature = self_distill_temperature or temperature

    @property
    def unified(self) -> bool:
        return len(self.modes) > 1

    def forward(
        self,
        scores: dict[str, torch.Tensor],
        target: torch.Tensor,
        *,
        step: int,
        dense_wide: torch.Tensor | None = None,
        dense_wide_target: torch.Tensor | None = None,
        teacher_scores: torch.Tensor | None = None,
        has_teacher: torch.Tensor | None = None,
        group_size: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            scores: raw scores per trained mode, each `[B, N]` over the same N passage columns.
            target: `[B]` column of each query's positive.
            step: the optimizer step (for the self-distillation warm-up).
            dense_wide / dense_wide_target: dense scores over more columns (cross-device negatives) and their
                targets; used for L_dense only. The ensemble always uses `scores["dense"]`.
            teacher_scores: `[B, G]` external teacher scores of each query's own group (positive first), used as
                `kd_loss` says (an error when `kd_loss` is `none`: the caller decides, not the data).
            has_teacher: `[B]` bool, which queries have teacher scores (their rows of `teacher_scores` are used,
                the others' ignored); None: all.
            group_size: G, needed with `teacher_scores` (each query's group is G columns from its target).

        Returns:
            `{"dense", "sparse", "colbert", "ensemble", "self_distill", "loss"}` — present parts only; `loss` is the
            total to minimize.
        """
        missing = [m for m in self.modes if m not in scores]
        if missing:
            raise ValueError(f"scores for {missing} are missing (trained modes: {self.modes})")
        tau = self.temperature
        soft = None
        if teacher_scores is not None:
            if self.kd_loss == "none":
                raise ValueError("teacher_scores given but kd_loss is 'none'")
            if group_size is None:
                raise ValueError("group_size is required with teacher_scores")
            if has_teacher is None:
                has_teacher = torch.ones(
                    teacher_scores.shape[0], dtype=torch.bool, device=teacher_scores.device
                )
            soft = torch.softmax(teacher_scores.float() / self.teacher_temperature, dim=-1)
            one_hot = torch.zeros_like(soft)
            one_hot[:, 0] = 1.0  # a query without teacher scores: all weight on its positive
            soft = torch.where(has_teacher.unsqueeze(1), soft, one_hot)

        def mode_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if soft is None:
                return info_nce(s, t, tau)
            if self.kd_loss == "m3_kd_loss":
                return m3_kd_loss(s, t, soft, group_size, tau)
            return info_nce(s, t, tau) + kl_div_loss(s, t, soft, has_teacher, group_size, tau)

        parts: dict[str, torch.Tensor] = {}
        for m in self.modes:
            if m == "dense" and dense_wide is not None:
                parts[m] = mode_loss(
                    dense_wide, dense_wide_target if dense_wide_target is not None else target
                )
            else:
                parts[m] = mode_loss(scores[m], target)
        if not self.unified:
            parts["loss"] = parts[self.modes[0]]
            return parts

        ensemble = sum(self.ensemble_weights[m] * scores[m] for m in self.modes)
        parts["ensemble"] = mode_loss(ensemble, target)
        lam = self.mode_weights
        loss = (sum(lam[m] * parts[m] for m in self.modes) + parts["ensemble"]) / 4
        if self.self_distill and step >= self.self_distill_start_step:
            t = self.self_distill_temperature
            teacher = torch.softmax(ensemble.detach() / t, dim=-1)
            lam_sd = self.self_distill_weights
            distill = sum(lam_sd[m] * soft_cross_entropy(scores[m], teacher, t) for m in self.modes) / 3
            parts["self_distill"] = distill
            loss = (loss + distill) / 2
        parts["loss"] = loss
        return parts
