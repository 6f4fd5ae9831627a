"""The registry's face of Wanda and SparseGPT: their masks are computed once, by the calibrated pass that needs the
model and data (``calibrate``), and carried to the mask machinery (fine-tuning, schedules) on the targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from worker.engine.errors import InvalidSpecError
from worker.engine.pruning.base import MaskRequest
from worker.engine.pruning.targets import PruneTarget


@dataclass
class CalibratedTarget(PruneTarget):
    """A target with the keep-mask the calibrated pass chose for it."""

    keep: torch.Tensor | None = None


def with_masks(targets: Sequence[PruneTarget], keep: dict[str, torch.Tensor]) -> list[PruneTarget]:
    """The targets carrying their calibrated keep-masks."""
    out: list[PruneTarget] = []
    for t in targets:
        fields = {f: getattr(t, f) for f in ("name", "module_name", "param", "kind", "sparsity", "overridden")}
        out.append(CalibratedTarget(**fields, keep=keep[t.name]))
    return out


@torch.no_grad()
def compute(req: MaskRequest) -> dict[str, torch.Tensor]:
    """The calibrated keep-masks; a target at sparsity 0 (a dense override, or a dense phase) keeps everything."""
    masks = {}
    for t, sparsity in req.pairs():
        if sparsity == 0.0:
            masks[t.name] = torch.ones_like(t.param, dtype=torch.bool)
        elif isinstance(t, CalibratedTarget) and t.keep is not None:
            masks[t.name] = t.keep.to(t.param.device)
        else:
            raise InvalidSpecError(
                f"{req.cfg.method} needs calibration data: its masks come from the model's inputs on "
                "data.calibration_samples rows of the training data; give a dataset"
            )
    return masks


__all__ = ["CalibratedTarget", "compute", "with_masks"]
