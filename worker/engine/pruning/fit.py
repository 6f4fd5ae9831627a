"""N:M patterns need each output's input size divisible by M: targets that cannot hold the pattern are left dense
(listed in the report with their share of the weights), or refused when the spec says ``strict``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from prunekit.spec.pruning import MaskPruningSpec, NMPruning, SparseGPTPruning, WandaPruning
from prunekit.spec.report import SkippedLayer
from worker.engine.errors import UnsupportedError
from worker.engine.pruning.calibrated.layers import layer_view
from worker.engine.pruning.nm import reduction_size
from worker.engine.pruning.targets import PruneTarget

_LISTED = 8


def nm_group(cfg: MaskPruningSpec) -> int | None:
    """M of the spec's N:M pattern, or None for patterns without groups."""
    if isinstance(cfg, NMPruning):
        return cfg.m
    if isinstance(cfg, WandaPruning | SparseGPTPruning) and cfg.pattern == "n:m":
        return cfg.m
    return None


def _width(root: nn.Module, cfg: MaskPruningSpec, t: PruneTarget) -> int:
    """The size the method groups along: calibrated methods know the layer (GPT-2's Conv1D is [in, out])."""
    view = layer_view(root, t) if not isinstance(cfg, NMPruning) else None
    return view.width if view is not None else reduction_size(t)


def split_unfit(
    root: nn.Module, targets: Sequence[PruneTarget], cfg: MaskPruningSpec
) -> tuple[list[PruneTarget], list[SkippedLayer]]:
    """(targets that can hold the pattern, the skipped ones); raises if ``strict`` and some cannot."""
    m = nm_group(cfg)
    if m is None:
        return list(targets), []
    widths = {t.name: _width(root, cfg, t) for t in targets}
    unfit = [t for t in targets if t.sparsity > 0.0 and widths[t.name] % m]
    if not unfit:
        return list(targets), []
    if getattr(cfg, "strict", False) or len(unfit) == len(targets):
        names = [t.name for t in unfit]
        listed = ", ".join(f"{t.name!r} ({widths[t.name]})" for t in unfit[:_LISTED])
        why = "strict is set" if len(unfit) < len(targets) else "no target can hold it"
        raise UnsupportedError(
            f"N:M pruning with M={m} needs each output's input size divisible by {m}, and {len(unfit)} target(s) "
            f"have other sizes: {listed} ({why}). Leave them out, e.g. exclude: {names[:_LISTED]!r}"
            + (", or set strict: false to skip them" if len(unfit) < len(targets) else "")
        )
    total = sum(t.param.numel() for t in targets)
    skipped = [
        SkippedLayer(
            name=t.name,
            shape=list(t.param.shape),
            reason=f"input size {widths[t.name]} is not divisible by M={m}: left dense",
            share=t.param.numel() / total,
        )
        for t in unfit
    ]
    left_out = {t.name for t in unfit}
    return [t for t in targets if t.name not in left_out], skipped


def skipped_note(skipped: Sequence[SkippedLayer]) -> str:
    """One report note for the layers an N:M pattern skipped."""
    share = sum(s.share for s in skipped)
    listed = ", ".join(s.name for s in skipped[:_LISTED]) + (" ..." if len(skipped) > _LISTED else "")
    return (
        f"N:M: {len(skipped)} layer(s) ({share:.2%} of the targets' weights) cannot hold the pattern and were left "
        f"dense: {listed} (sparsity.skipped_layers; strict: true refuses them instead)"
    )
