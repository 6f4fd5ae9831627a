"""Which parameters a mask-pruning spec prunes, classified by shape and name so that eager modules, TorchScript
``RecursiveScriptModule`` and ``torch.export`` GraphModules (which keep no layer types) are treated alike."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

import torch

from prunekit.spec.pruning import MaskPruningSpec
from worker.engine.errors import InvalidSpecError

TargetKind = Literal["conv", "linear", "norm", "bias", "other"]

_LISTED_NAMES = 8  # valid names quoted in an error message


@dataclass
class PruneTarget:
    name: str  # parameter name, e.g. "features.0.weight"
    module_name: str  # "features.0"
    param: torch.nn.Parameter
    kind: TargetKind  # from shape and name; works for ScriptModule and GraphModule
    sparsity: float  # final target for this parameter (global value or an override)
    overridden: bool = False  # sparsity came from cfg.overrides (global scopes leave such targets out of the pool)


def classify(name: str, param: torch.Tensor) -> TargetKind:
    """Kind of a parameter from its shape and name: dim 3-5 weight = conv, 2 = linear, 1 = norm weight or bias."""
    if not param.is_floating_point():
        return "other"
    leaf = name.rsplit(".", 1)[-1]
    if leaf.endswith("weight"):
        if param.dim() in (3, 4, 5):
            return "conv"
        if param.dim() == 2:
            return "linear"
        if param.dim() == 1:
            return "norm"
    elif leaf.endswith("bias") and param.dim() == 1:
        return "bias"
    return "other"


def module_name_of(param_name: str) -> str:
    """'features.0.weight' -> 'features.0'; a parameter of the root module has module name ''."""
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def _some(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_LISTED_NAMES])
    more = f" and {len(names) - _LISTED_NAMES} more" if len(names) > _LISTED_NAMES else ""
    return (shown + more) if names else "(none)"


def _exclusion_reason(kind: TargetKind, is_classifier: bool, excluded: bool, included: bool) -> str | None:
    if not included:
        return "not matched by 'include'"
    if excluded:
        return "matched by 'exclude'"
    if is_classifier:
        return "it is the final classifier (set prune_classifier: true)"
    if kind == "norm":
        return "normalization weights are skipped (set prune_normalization: true)"
    if kind == "bias":
        return "biases are skipped (set prune_bias: true)"
    if kind == "other":
        return "only conv/linear/norm weights and biases can be pruned"
    return None


def select_targets(module: torch.nn.Module, cfg: MaskPruningSpec) -> list[PruneTarget]:
    """Parameters of ``module`` that ``cfg`` prunes, in ``named_parameters()`` order, each with its final sparsity."""
    params = list(module.named_parameters())
    kinds = {name: classify(name, p) for name, p in params}
    linear_names = [name for name, _ in params if kinds[name] == "linear"]
    classifier = linear_names[-1] if linear_names else None

    targets: list[PruneTarget] = []
    reasons: dict[str, str] = {}  # why a parameter is not a target, for override errors
    for name, p in params:
        kind = kinds[name]
        is_classifier = name == classifier and not cfg.prune_classifier
        kind_skipped = (kind == "norm" and not cfg.prune_normalization) or (kind == "bias" and not cfg.prune_bias)
        included = _matches(name, cfg.include)
        excluded = _matches(name, cfg.exclude)
        if included and not excluded and not is_classifier and not kind_skipped and kind != "other":
            targets.append(PruneTarget(name, module_name_of(name), p, kind, cfg.sparsity))
        else:
            reasons[name] = _exclusion_reason(kind, is_classifier, excluded, included) or "skipped"

    if not targets:
        raise InvalidSpecError(
            "No parameters to prune: include/exclude and the prune_* flags leave nothing. "
            f"Parameters of this model: {_some([n for n, _ in params])}"
        )
    _apply_overrides(targets, cfg, reasons)
    return targets


def _apply_overrides(targets: list[PruneTarget], cfg: MaskPruningSpec, reasons: dict[str, str]) -> None:
    if cfg.method == "nm":  # an N:M layer is either N:M or dense; other ratios have no N:M pattern
        odd = {p: s for p, s in cfg.overrides.items() if s not in (0.0, cfg.sparsity)}
        if odd:
            raise InvalidSpecError(
                f"N:M pruning overrides can only be 0.0 (keep the layer dense) or {cfg.sparsity} (1 - n/m); got {odd}"
            )
    # Later patterns win when several match one parameter, like later keys in a config file.
    for pattern, sparsity in cfg.overrides.items():
        hits = [t for t in targets if fnmatchcase(t.name, pattern) or fnmatchcase(t.module_name, pattern)]
        if not hits:
            skipped = [
                f"{n} ({why})"
                for n, why in reasons.items()
                if fnmatchcase(n, pattern) or fnmatchcase(module_name_of(n), pattern)
            ]
            detail = f" It matches only parameters that are not pruned: {_some(skipped)}." if skipped else ""
            raise InvalidSpecError(
                f"Override {pattern!r} matches no prunable parameter.{detail} "
                f"Prunable parameters: {_some([t.name for t in targets])}; "
                f"their modules: {_some(sorted({t.module_name for t in targets}))}"
            )
        for t in hits:
            t.sparsity = sparsity
            t.overridden = True
