"""When masks are computed and enforced during fine-tuning: one-shot, or gradual (Zhu & Gupta 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prunekit.spec import MaskPruningSpec
from worker.engine.pruning import MaskSet, PruneTarget, compute_masks, cubic_sparsity


class MaskController:
    """Owns the current masks; the training loop calls `after_step` after every optimizer step."""

    def __init__(
        self,
        module: torch.nn.Module,
        targets: Sequence[PruneTarget],
        cfg: MaskPruningSpec,
        epochs: int,
        steps_per_epoch: int,
        seed: int,
    ) -> None:
        self.module = module
        self.targets = list(targets)
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(seed)
        sched = cfg.schedule
        self.gradual = sched.kind == "gradual" and epochs > 0
        end_epoch = sched.end_epoch if sched.end_epoch is not None else max(1, round(epochs * 2 / 3))
        self.start_step = min(sched.start_epoch, epochs) * steps_per_epoch
        self.end_step = max(min(end_epoch, epochs) * steps_per_epoch, self.start_step + 1)
        self.frequency = sched.frequency
        self.level = 0.0
        self.masks: MaskSet | None = None

    @property
    def at_final(self) -> bool:
        return self.level >= self.cfg.sparsity - 1e-9

    def _set_level(self, level: float) -> None:
        self.level = level
        if level <= 0.0:
            self.masks = None
            return
        self.masks = compute_masks(self.targets, self.cfg, level=level, generator=self.generator)
        self.masks.apply(self.module)

    def start(self) -> None:
        """One-shot: prune to the final target now. Gradual: start at the initial sparsity."""
        if self.gradual:
            self._set_level(self.cfg.schedule.initial_sparsity)
        else:
            self._set_level(self.cfg.sparsity)

    def after_step(self, step: int) -> None:
        """Recompute masks on the gradual schedule; always re-zero pruned weights the optimizer touched."""
        if self.gradual and not self.at_final and step >= self.start_step and step % self.frequency == 0:
            level = cubic_sparsity(
                step, self.start_step, self.end_step, self.cfg.schedule.initial_sparsity, self.cfg.sparsity
            )
            if level > self.level:
                self._set_level(level)
                return
        if self.masks is not None:
            self.masks.apply(self.module)

    def finish(self) -> None:
        """Make sure the final target is reached and enforced, whatever the schedule did."""
        if not self.at_final:
            self._set_level(self.cfg.sparsity)
        elif self.masks is not None:
            self.masks.apply(self.module)


class NoMasks:
    """For models already made smaller by structural pruning: nothing to mask, fine-tuning only recovers."""

    level = 0.0
    at_final = True

    def start(self) -> None:
        """Nothing to prune."""

    def after_step(self, step: int) -> None:
        """Nothing to re-zero."""

    def finish(self) -> None:
        """Nothing to enforce."""
