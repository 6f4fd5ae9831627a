"""Fine-tuning and regularization configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerSpec(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only.")
    betas: tuple[float, float] = (0.9, 0.999)


class LRScheduleSpec(_Strict):
    kind: Literal["constant", "cosine", "step"] = "constant"
    step_size: int = Field(10, ge=1, description="step: epochs between decays.")
    gamma: float = Field(0.1, gt=0, le=1, description="step: decay factor.")
    warmup_epochs: int = Field(0, ge=0)


class DistillationSpec(_Strict):
    """Knowledge distillation from the original (unpruned) model."""

    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the distillation loss; 1 - alpha on the labels.")
    temperature: float = Field(4.0, gt=0, le=100)
    hidden_states: float = Field(
        0.0,
        ge=0,
        le=100,
        description="transformer_structural recovery: weight of an added MSE between each kept block's output and "
        "the same block of the original, on the hidden dimensions kept, divided by the original's mean square "
        "(as in Minitron); 0 is off.",
    )


class RegularizersSpec(_Strict):
    """Regularizers combine; each coefficient 0 means off."""

    l2: float = Field(0.0, ge=0, description="L2 weight decay coefficient (decoupled for AdamW).")
    l1: float = Field(0.0, ge=0, description="L1 penalty on prunable weights, added to the loss.")
    group_lasso: float = Field(0.0, ge=0, description="Group lasso on output channels of conv/linear weights.")
    bn_l1: float = Field(0.0, ge=0, description="L1 on normalization scales (network slimming).")
    distillation: DistillationSpec | None = None


class EarlyStoppingSpec(_Strict):
    patience: int = Field(3, ge=1)
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True


class FinetuneSpec(_Strict):
    epochs: int = Field(5, ge=0, le=10_000, description="Epochs of fine-tuning under the pruning masks.")
    regularize_epochs: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Regularize-then-prune: epochs trained with the regularizers before pruning. The "
        "sparsity-inducing terms (l1, group_lasso, bn_l1) then drive weights toward what pruning removes, and are "
        "dropped for the recovery epochs that follow (l2 and distillation stay).",
    )
    batch_size: int = Field(64, ge=1, le=65_536)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    lr_schedule: LRScheduleSpec = Field(default_factory=LRScheduleSpec)
    regularizers: RegularizersSpec = Field(default_factory=RegularizersSpec)
    early_stopping: EarlyStoppingSpec | None = None
    max_grad_norm: float | None = Field(None, gt=0)
