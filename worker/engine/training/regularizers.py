"""Regularizers added to the loss: L1, group lasso on output channels, L1 on norm scales, distillation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from prunekit.spec import DistillationSpec, RegularizersSpec


def l1_penalty(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum of absolute values: pushes small weights to exactly zero, i.e. toward what pruning removes."""
    return torch.stack([w.abs().sum() for w in weights]).sum()


def group_lasso_penalty(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over output channels of each channel's L2 norm, scaled by sqrt(group size) (Yuan & Lin 2006)."""
    terms = []
    for w in weights:
        if w.dim() < 2:
            continue
        flat = w.reshape(w.shape[0], -1)
        terms.append(flat.norm(dim=1).sum() * flat.shape[1] ** 0.5)
    return torch.stack(terms).sum() if terms else torch.zeros(())


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, spec: DistillationSpec
) -> torch.Tensor:
    """Hinton et al. 2015: KL between softened distributions, scaled by T^2 to keep gradient magnitudes."""
    t = spec.temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    p_teacher = F.softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * (t * t)


class RegularizedLoss:
    """Task loss plus the configured penalties; `terms` of the last call are kept for logging."""

    def __init__(
        self,
        spec: RegularizersSpec,
        prunable: Sequence[torch.Tensor],
        norm_scales: Sequence[torch.Tensor],
        labelled: bool,
        feature_targets: bool = False,
    ) -> None:
        self.spec = spec
        # Models without class outputs (embeddings): distillation is the MSE to the original's pooled outputs.
        self.feature_targets = feature_targets
        self.prunable = list(prunable)
        self.norm_scales = list(norm_scales)
        self.labelled = labelled
        self.distill = spec.distillation
        if not labelled and self.distill is None:
            # Without labels the only training signal is the original model.
            self.distill = DistillationSpec(alpha=1.0)
        self.terms: dict[str, float] = {}

    def _soft_kl(self, logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        assert self.distill is not None
        return distillation_loss(logits, teacher_logits, self.distill)

    @property
    def needs_teacher(self) -> bool:
        return self.distill is not None

    def __call__(
        self, logits: torch.Tensor, target: torch.Tensor | None, teacher_logits: torch.Tensor | None
    ) -> torch.Tensor:
        terms: dict[str, torch.Tensor] = {}
        alpha = self.distill.alpha if self.distill is not None else 0.0
        if self.labelled and target is not None and alpha < 1.0:
            terms["task"] = (1.0 - alpha) * F.cross_entropy(logits.float(), target)
        if self.distill is not None and teacher_logits is not None:
            distance = F.mse_loss if self.feature_targets else self._soft_kl
            terms["distill"] = alpha * distance(logits.float(), teacher_logits.float())
        if self.spec.l1 > 0 and self.prunable:
            terms["l1"] = self.spec.l1 * l1_penalty(self.prunable)
        if self.spec.group_lasso > 0 and self.prunable:
            terms["group_lasso"] = self.spec.group_lasso * group_lasso_penalty(self.prunable)
        if self.spec.bn_l1 > 0 and self.norm_scales:
            terms["bn_l1"] = self.spec.bn_l1 * l1_penalty(self.norm_scales)
        self.terms = {k: float(v.detach()) for k, v in terms.items()}
        return torch.stack(list(terms.values())).sum()
