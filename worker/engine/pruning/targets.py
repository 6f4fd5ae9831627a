"""Which parameters a mask-pruning spec prunes, classified by shape and name so that eager modules, TorchScript
``RecursiveScriptModule`` and ``torch.export`` GraphModules (which keep no layer types) are treated alike."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal

import torch

from prunekit.spec.pruning import MaskPruningSpec
from prunekit.spec.report import NotPrunable
from worker.engine.errors import InvalidSpecError
from worker.engine.pruning.classifier import output_parameters
from worker.engine.pruning.ties import storage_key, unique_parameters

SampleInput = torch.Tensor | Mapping[str, torch.Tensor]  # one input, or named inputs (e.g. input_ids, mask)
TargetKind = Literal["conv", "linear", "recurrent", "norm", "bias", "other"]

_RECURRENT_WEIGHT = re.compile(r"weight_(ih|hh|hr)_l\d+(_reverse)?")  # nn.LSTM / nn.GRU / nn.RNN
_RECURRENT_BIAS = re.compile(r"bias_(ih|hh)_l\d+(_reverse)?")

_LISTED_NAMES = 8  # valid names quoted in an error message


@dataclass
class PruneTarget:
    name: str  # parameter name, e.g. "features.0.weight"
    module_name: str  # "features.0"
    param: torch.nn.Parameter
    kind: TargetKind  # from shape and name; works for ScriptModule and GraphModule
    sparsity: float  # final target for this parameter (global value or an override)
    overridden: bool = False  # sparsity came from cfg.overrides (global scopes leave such targets out of the pool)
    # The weight is stored [in, out] (transformers' Conv1D in GPT-2): its inputs run along dim 0, not dim 1.
    inputs_first: bool = False


def classify(name: str, param: torch.Tensor) -> TargetKind:
    """Kind of a parameter from its shape and name: dim 3-5 weight = conv, 2 = linear, 1 = norm weight or bias;
    ``weight_ih_l0``-style names are recurrent (LSTM/GRU/RNN) gate weights."""
    if not param.is_floating_point():
        return "other"
    leaf = name.rsplit(".", 1)[-1]
    if _RECURRENT_WEIGHT.fullmatch(leaf) and param.dim() == 2:
        return "recurrent"
    if _RECURRENT_BIAS.fullmatch(leaf) and param.dim() == 1:
        return "bias"
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
        return "it is the final classifier, whose outputs are the model's (set prune_classifier: true)"
    if kind == "norm":
        return "normalization weights are skipped (set prune_normalization: true)"
    if kind == "bias":
        return "biases are skipped (set prune_bias: true)"
    if kind == "other":
        return "only conv/linear/recurrent/norm weights and biases can be pruned"
    return None


@dataclass
class TargetPlan:
    """What a spec prunes in one model, and what it leaves out and why (for the report)."""

    targets: list[PruneTarget]
    classifier: list[str]  # parameters of the layers producing the outputs
    classifier_source: str  # "graph", or "fallback: ..." with the reason
    tied: dict[str, list[str]] = field(default_factory=dict)  # first name -> other names of the same tensor
    not_prunable: list[NotPrunable] = field(default_factory=list)

    def notes(self) -> list[str]:
        """Caveats for report.notes: a classifier not found from the graph, ties, weights no method can prune."""
        notes = []
        if self.classifier_source != "graph":
            notes.append(f"classifier {_some(self.classifier)} chosen by the {self.classifier_source}")
        for first, others in self.tied.items():
            notes.append(f"tied weights: {first!r} is the same tensor as {_some(others)}; counted and pruned once")
        if self.not_prunable:
            listed = "; ".join(f"{n.name} ({n.reason})" for n in self.not_prunable[:_LISTED_NAMES])
            notes.append(f"{len(self.not_prunable)} weight tensor(s) not prunable: {listed}")
        return notes


def select_targets(
    module: torch.nn.Module, cfg: MaskPruningSpec, example_input: SampleInput | None = None
) -> list[PruneTarget]:
    """Parameters of ``module`` that ``cfg`` prunes, in ``named_parameters()`` order, each with its final sparsity."""
    return plan_targets(module, cfg, example_input).targets


def _inputs_first(modules: dict[str, torch.nn.Module], owner: str, name: str) -> bool:
    """True for the weight of a transformers Conv1D (GPT-2), which stores [in, out] instead of [out, in]."""
    layer = modules.get(owner)
    if layer is None or not name.endswith(".weight"):
        return False
    kind = getattr(layer, "original_name", type(layer).__name__)  # ScriptModules keep the eager class name
    return kind == "Conv1D" and not isinstance(layer, torch.nn.Conv1d)


def plan_targets(module: torch.nn.Module, cfg: MaskPruningSpec, example_input: SampleInput | None = None) -> TargetPlan:
    """Targets plus the classifier (from the graph of ``example_input``'s forward pass), ties and unprunable weights.

    Each tensor is considered once (tied parameters under their first name); patterns match any of its names.
    """
    params, tied = unique_parameters(module)
    kinds = {name: classify(name, p) for name, p in params}
    classifier, source = find_classifier(module, params, example_input)
    targets: list[PruneTarget] = []
    modules = dict(module.named_modules())  # get_submodule is not supported on ScriptModules
    reasons: dict[str, str] = {}  # why a parameter is not a target, for override errors
    for name, p in params:
        names = [name, *tied.get(name, [])]
        kind = kinds[name]
        is_classifier = name in classifier and not cfg.prune_classifier
        kind_skipped = (kind == "norm" and not cfg.prune_normalization) or (kind == "bias" and not cfg.prune_bias)
        included = any(_matches(n, cfg.include) for n in names)
        excluded = any(_matches(n, cfg.exclude) for n in names)
        if included and not excluded and not is_classifier and not kind_skipped and kind != "other":
            owner = module_name_of(name)
            first = _inputs_first(modules, owner, name)
            targets.append(PruneTarget(name, owner, p, kind, cfg.sparsity, inputs_first=first))
        else:
            reasons[name] = _exclusion_reason(kind, is_classifier, excluded, included) or "skipped"

    if not targets:
        raise InvalidSpecError(
            "No parameters to prune: include/exclude and the prune_* flags leave nothing. "
            f"Parameters of this model: {_some([n for n, _ in params])}"
        )
    _apply_overrides(targets, cfg, reasons)
    return TargetPlan(targets, sorted(classifier), source, tied, _not_prunable(params, kinds))


def find_classifier(
    module: torch.nn.Module, params: list[tuple[str, torch.nn.Parameter]], example_input: SampleInput | None
) -> tuple[set[str], str]:
    """Names of the output layers' parameters from the autograd graph, else the last 2-D weight (and why)."""
    why = "rule 'last 2-D weight': no sample input to trace"
    if example_input is not None:
        found = output_parameters(module, example_input)
        if not isinstance(found, str):
            name_of = {storage_key(p): n for n, p in params}
            return {name_of[k] for k in map(storage_key, found) if k in name_of}, "graph"
        why = f"rule 'last 2-D weight': the output layers could not be traced ({found})"
    linear = [name for name, p in params if classify(name, p) == "linear"]
    return ({linear[-1]} if linear else set()), f"fallback {why}"


def _not_prunable(params: list[tuple[str, torch.nn.Parameter]], kinds: dict[str, TargetKind]) -> list[NotPrunable]:
    """Weight-like tensors (2+ dims) no method prunes: loose parameters whose dimensions have no known meaning."""
    out = []
    for name, p in params:
        if kinds[name] == "other" and p.dim() >= 2:
            why = (
                "not floating-point"
                if not p.is_floating_point()
                else "a loose parameter, not the weight of a conv/linear/recurrent layer (e.g. a positional "
                "embedding or class token), so its dimensions have no known meaning"
            )
            out.append(NotPrunable(name=name, shape=list(p.shape), reason=why))
    return out


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
