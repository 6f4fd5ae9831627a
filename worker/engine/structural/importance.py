"""Channel-importance criteria for structural pruning, one class each behind one interface.

A criterion scores every channel of a torch-pruning dependency group (all layers coupled to those
channels); the lowest-scoring channels are removed. Adding a criterion: one subclass of
`ChannelImportance` plus one line in `IMPORTANCES` (keyed by `StructuralPruning.importance`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch_pruning as tp
from torch import nn

from prunekit.spec.pruning import StructuralPruning
from worker.engine.errors import InvalidSpecError

GradientFn = Callable[[nn.Module], None]
"""Runs forward + backward of the job's loss on a few batches; gradients accumulate in `.grad`."""


class ChannelImportance(ABC):
    """Scores the channels of a dependency group (higher = keep); `prepare` runs before every pruning step."""

    name: ClassVar[str]
    needs_data: ClassVar[bool] = False

    def __init__(self, cfg: StructuralPruning) -> None:
        self.cfg = cfg

    def check_model(self, model: nn.Module) -> None:  # noqa: B027 (optional hook, a no-op by default)
        """Raise InvalidSpecError when this criterion cannot score `model` at all."""

    def prepare(self, model: nn.Module, data_fn: GradientFn | None) -> None:  # noqa: B027 (optional hook, a no-op by default)
        """Refresh whatever the scores depend on besides the weights (e.g. gradients)."""

    def cleanup(self, model: nn.Module) -> None:  # noqa: B027 (optional hook, a no-op by default)
        """Drop state `prepare` left on the model."""

    @abstractmethod
    def __call__(self, group: Any) -> torch.Tensor | None:
        """One score per channel of the torch-pruning `group`, or None to leave the group unpruned."""


class MagnitudeImportance(ChannelImportance):
    """L1 or L2 norm of each channel's weights, summed over every coupled layer (group magnitude)."""

    name = "magnitude"

    def __init__(self, cfg: StructuralPruning) -> None:
        super().__init__(cfg)
        self._scorer = tp.importance.GroupMagnitudeImportance(p=1 if cfg.norm == "l1" else 2)

    def __call__(self, group: Any) -> torch.Tensor | None:
        return self._scorer(group)


class TaylorImportance(ChannelImportance):
    """First-order Taylor (Molchanov et al. 2019): |weight x gradient of the loss| per channel, group-summed.

    `data_fn` runs forward + backward over a few batches; gradients are summed across those batches
    (no zeroing in between), so the score is the Taylor term of the total loss on that data.
    """

    name = "taylor"
    needs_data = True

    def __init__(self, cfg: StructuralPruning) -> None:
        super().__init__(cfg)
        self._scorer = tp.importance.GroupTaylorImportance()
        self._requires_grad: dict[str, bool] = {}

    def prepare(self, model: nn.Module, data_fn: GradientFn | None) -> None:
        if data_fn is None:
            raise InvalidSpecError(
                "importance 'taylor' needs data: pass a dataset (gradients come from the job's loss)"
            )
        was_training = model.training
        self._requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None
        # Eval mode: BatchNorm must not update its running statistics while we only measure gradients.
        model.eval()
        with torch.enable_grad():
            data_fn(model)
        model.train(was_training)
        for p in model.parameters():
            if p.grad is None:  # a layer the loss does not reach has zero first-order importance
                p.grad = torch.zeros_like(p)

    def cleanup(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            p.grad = None
            p.requires_grad_(self._requires_grad.get(n, True))

    def __call__(self, group: Any) -> torch.Tensor | None:
        return self._scorer(group)


class BNScaleImportance(ChannelImportance):
    """Network slimming (Liu et al. 2017): |gamma| of the BatchNorm following each conv.

    Groups without a BatchNorm get no score and are left unpruned.
    """

    name = "bn_scale"

    def __init__(self, cfg: StructuralPruning) -> None:
        super().__init__(cfg)
        self._scorer = tp.importance.BNScaleImportance()

    def check_model(self, model: nn.Module) -> None:
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine for m in model.modules()):
            raise InvalidSpecError(
                "importance 'bn_scale' needs BatchNorm layers with learnable scales; this model has none "
                "(use 'magnitude' or 'taylor')"
            )

    def __call__(self, group: Any) -> torch.Tensor | None:
        return self._scorer(group)


IMPORTANCES: dict[str, type[ChannelImportance]] = {
    MagnitudeImportance.name: MagnitudeImportance,
    TaylorImportance.name: TaylorImportance,
    BNScaleImportance.name: BNScaleImportance,
}


def make_importance(cfg: StructuralPruning) -> ChannelImportance:
    """The criterion named by `cfg.importance`."""
    try:
        cls = IMPORTANCES[cfg.importance]
    except KeyError:
        raise InvalidSpecError(
            f"unknown importance {cfg.importance!r}; known: {', '.join(sorted(IMPORTANCES))}"
        ) from None
    return cls(cfg)
