"""The training plan of a compress job: optional regularize phase, pruning, then recovery fine-tuning."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from prunekit.spec import FinetuneSpec, MaskPruningSpec
from prunekit.spec.report import EpochRecord
from worker.engine.data import Dataset
from worker.engine.models.handle import LoadedModel
from worker.engine.pruning import PruneTarget
from worker.engine.training.finetune import FinetuneResult, TrainContext, finetune
from worker.engine.training.masking import MaskController
from worker.engine.training.regularizers import RegularizedLoss

OnEpoch = Callable[[EpochRecord, float], None]


@dataclass
class PhaseInputs:
    model: LoadedModel
    data: Dataset
    targets: list[PruneTarget]
    cfg: MaskPruningSpec
    teacher_train_logits: torch.Tensor | None
    teacher_val_logits: torch.Tensor | None
    device: torch.device
    seed: int
    eval_batch_size: int
    teacher_module: torch.nn.Module | None = None  # causal LMs: distillation computed batch by batch


def _context(inp: PhaseInputs, ft: FinetuneSpec, masks: MaskController) -> TrainContext:
    norm_scales = [p for n, p in inp.model.module.named_parameters() if p.dim() == 1 and n.endswith("weight")]
    loss = RegularizedLoss(
        ft.regularizers, [t.param for t in inp.targets], norm_scales, inp.data.labelled, inp.data.features
    )
    return TrainContext(
        model=inp.model,
        data=inp.data,
        masks=masks,
        loss=loss,
        teacher_train_logits=inp.teacher_train_logits if loss.needs_teacher else None,
        teacher_val_logits=inp.teacher_val_logits if loss.needs_teacher else None,
        device=inp.device,
        amp=inp.device.type == "cuda",
        seed=inp.seed,
        eval_batch_size=inp.eval_batch_size,
        fixed_batch=inp.model.fixed_batch_size,
        teacher_module=inp.teacher_module if loss.needs_teacher else None,
    )


def _steps_per_epoch(data: Dataset, ft: FinetuneSpec) -> int:
    return max(1, -(-len(data.x_train) // ft.batch_size))


def regularize_phase(inp: PhaseInputs, ft: FinetuneSpec, on_epoch: OnEpoch) -> FinetuneResult:
    """Train dense with every regularizer on, so sparsity-inducing terms shape the weights before pruning."""
    schedule = inp.cfg.schedule.model_copy(update={"kind": "oneshot"})
    dense_cfg = inp.cfg.model_copy(update={"sparsity": 0.0, "overrides": {}, "schedule": schedule})
    phase_ft = ft.model_copy(update={"epochs": ft.regularize_epochs, "early_stopping": None})
    masks = MaskController(inp.model.module, inp.targets, dense_cfg, phase_ft.epochs, 1, inp.seed)

    def tagged(record: EpochRecord, fraction: float) -> None:
        on_epoch(record.model_copy(update={"phase": "regularize"}), fraction)

    result = finetune(_context(inp, phase_ft, masks), phase_ft, tagged)
    result.history = [r.model_copy(update={"phase": "regularize"}) for r in result.history]
    return result


def recovery_spec(ft: FinetuneSpec) -> FinetuneSpec:
    """After a regularize phase, recover without the sparsity-inducing terms (l2 and distillation stay)."""
    if ft.regularize_epochs == 0:
        return ft
    regs = ft.regularizers.model_copy(update={"l1": 0.0, "group_lasso": 0.0, "bn_l1": 0.0})
    return ft.model_copy(update={"regularizers": regs})


def prune_and_recover(inp: PhaseInputs, ft: FinetuneSpec, on_epoch: OnEpoch) -> FinetuneResult:
    """Prune (one-shot or along the gradual schedule) while fine-tuning for ft.epochs."""
    masks = MaskController(inp.model.module, inp.targets, inp.cfg, ft.epochs, _steps_per_epoch(inp.data, ft), inp.seed)
    return finetune(_context(inp, ft, masks), ft, on_epoch)


def renumber(first: list[EpochRecord], second: list[EpochRecord]) -> list[EpochRecord]:
    """One history across phases, epochs counted from 1."""
    offset = len(first)
    return [*first, *(r.model_copy(update={"epoch": r.epoch + offset}) for r in second)]
