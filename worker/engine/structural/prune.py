"""Physical channel removal with torch-pruning's dependency graph.

Every layer coupled to a removed channel shrinks with it: the producing conv/linear and its norm,
residual adds, concatenations, depthwise/grouped convs and the next layers' inputs. Works on eager
`nn.Module`s; TorchScript and torch.export programs are refused with `UnsupportedError`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunekit.spec.job import LatencySpec
from prunekit.spec.pruning import StructuralPruning
from worker.engine.errors import EngineError, InvalidSpecError, UnsupportedError
from worker.engine.evaluation.latency import SpeedupFn, interleaved_speedup
from worker.engine.structural.checks import (
    OUTPUT_PRODUCERS,
    check_same_output_shapes,
    check_supported,
    coupled_to,
    excluded_modules,
    graph_error,
    loose_parameters,
)
from worker.engine.structural.importance import ChannelImportance, GradientFn, make_importance
from worker.engine.structural.widths import Widths, direct_shapes, layer_widths, rebuild_from_widths

__all__ = ["LatencyFn", "StructuralResult", "Widths", "default_speedup_fn", "prune_structurally", "rebuild_from_widths"]

LatencyFn = Callable[[nn.Module], float]
"""Latency of one forward pass of the module (any unit, used only as a ratio)."""

MAX_CHANNEL_RATIO = 0.98  # budget searches never remove more than this share of a layer's channels
MAX_BUDGET_STEPS = 60  # pruning steps a MACs/latency budget search may take
MIN_RATIO_STEP = 0.01  # smallest increase of the channel ratio between two budget-search steps


@dataclass
class StructuralResult:
    """A physically smaller model and what pruning it cost and saved."""

    module: nn.Module
    widths: Widths  # JSON-able; only layers whose sizes changed
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    seconds: float  # wall time of the whole call (graph building, scoring, pruning, counting)
    steps: int  # pruning steps taken
    channel_ratio: float  # share of channels removed per prunable layer (global ratio with global_ranking)
    # torch-pruning history [layer, is_out, indices]; indices refer to the model as it was at that step
    history: list[list[Any]] = field(default_factory=list)
    latency_before: float | None = None  # latency_fn values; set when target_speedup was used
    latency_after: float | None = None

    @property
    def macs_reduction(self) -> float:
        return self.macs_before / max(self.macs_after, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (without the module)."""
        return {
            "widths": self.widths,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_reduction": self.macs_reduction,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "seconds": self.seconds,
            "steps": self.steps,
            "channel_ratio": self.channel_ratio,
            "latency_before": self.latency_before,
            "latency_after": self.latency_after,
        }


def prune_structurally(
    model: nn.Module,
    cfg: StructuralPruning,
    example_input: torch.Tensor,
    data_fn: GradientFn | None = None,
    latency_fn: LatencyFn | None = None,
    speedup_fn: SpeedupFn | None = None,
) -> StructuralResult:
    """Remove channels from a copy of `model` per `cfg`; `model` itself is left unchanged.

    `data_fn` (forward+backward on job batches) is required by importance 'taylor'. `target_speedup` measures
    each candidate with `speedup_fn` against the unpruned model, timed interleaved (default on
    `example_input`), or, given a per-module `latency_fn`, with that (e.g. a deterministic cost model).
    """
    started = time.perf_counter()
    importance = _check_request(model, cfg, data_fn)
    model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    excluded = excluded_modules(model, cfg.exclude)  # before the checks: following their advice must work
    loose = loose_parameters(model, excluded)
    names = {m: n for n, m in model.named_modules()}
    shapes_before = direct_shapes(model)
    with torch.no_grad():
        out_before = _run(model, example_input, "before pruning")
    macs_before, params_before = _count(model, example_input)

    budget = cfg.target_macs_reduction is not None or cfg.target_speedup is not None
    pruner = _build_pruner(model, cfg, importance, example_input, excluded, budget)
    # Layers coupled to a loose parameter of an excluded module keep their channels, so it stays whole.
    pruner.ignored_layers.extend(coupled_to(pruner, loose))
    ratios: list[float] = pruner.per_step_pruning_ratio
    if budget:
        # Budget searches choose each step's ratio as they go; the pruner reads this list at every step.
        ratios = [0.0] * (MAX_BUDGET_STEPS + 1)
        pruner.per_step_pruning_ratio = ratios
    # Layers producing the model's outputs keep their output width (known only once the graph exists).
    for layer in output_layers(pruner.DG):
        pruner.ignored_layers.extend(layer.modules())

    latency_before: float | None = None
    latency_after: float | None = None
    if not budget:
        for _ in range(cfg.iterative_steps):
            _step(pruner, importance, model, data_fn, names)
        steps = cfg.iterative_steps
    else:
        if cfg.target_speedup is not None:
            speedup_fn = speedup_fn or (
                separate_speedup(latency_fn) if latency_fn else default_speedup_fn(example_input)
            )
            reference = copy.deepcopy(model)  # unpruned, timed beside every candidate
        steps = 0
        ratio = 0.0
        reached = 1.0
        target = float(cfg.target_macs_reduction or cfg.target_speedup or 1.0)
        while reached < target:
            if steps >= MAX_BUDGET_STEPS or ratio >= MAX_CHANNEL_RATIO:
                what = "MACs reduction" if cfg.target_macs_reduction is not None else "speedup"
                raise InvalidSpecError(
                    f"could not reach a {target:g}x {what}: {reached:.2f}x after removing {ratio:.0%} of the "
                    f"channels of each prunable layer ({steps} steps); lower the target or exclude fewer layers"
                )
            # Cost scales roughly with (1 - ratio)^2 (both a layer's inputs and outputs shrink); this
            # underestimates the ratio needed (first/last layers shrink on one side only), so the search
            # approaches the target from below instead of overshooting it.
            predicted = 1.0 - (1.0 - ratio) * math.sqrt(reached / target)
            remaining_planned = max(1, cfg.iterative_steps - steps)
            ratio = min(MAX_CHANNEL_RATIO, max(ratio + MIN_RATIO_STEP, ratio + (predicted - ratio) / remaining_planned))
            ratios[pruner.current_step + 1] = ratio
            _step(pruner, importance, model, data_fn, names)
            steps += 1
            if cfg.target_speedup is not None:
                assert speedup_fn is not None
                reached, latency_before, latency_after = speedup_fn(reference, model)
            else:
                reached = macs_before / max(_count(model, example_input)[0], 1)

    with torch.no_grad():
        out_after = _run(model, example_input, "after removing channels")
    check_same_output_shapes(out_before, out_after)
    macs_after, params_after = _count(model, example_input)
    model.train(was_training)
    return StructuralResult(
        module=model,
        widths=layer_widths(model, names, shapes_before),
        macs_before=int(macs_before),
        macs_after=int(macs_after),
        params_before=int(params_before),
        params_after=int(params_after),
        seconds=time.perf_counter() - started,
        steps=steps,
        channel_ratio=float(ratios[pruner.current_step]),
        history=[[name, bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in pruner.pruning_history()],
        latency_before=latency_before,
        latency_after=latency_after,
    )


def _check_request(model: nn.Module, cfg: StructuralPruning, data_fn: GradientFn | None) -> ChannelImportance:
    """Refuse what cannot work before copying the model; the importance criterion of `cfg`."""
    check_supported(model)
    if cfg.target_macs_reduction is not None and cfg.target_speedup is not None:
        raise InvalidSpecError("set at most one of target_macs_reduction and target_speedup")
    if cfg.prune_classifier:
        raise InvalidSpecError(
            "prune_classifier is not possible structurally: removing a classifier's output units changes "
            "the model's outputs (its input features are pruned with the layer before it anyway)"
        )
    importance = make_importance(cfg)
    importance.check_model(model)
    if importance.needs_data and data_fn is None:
        raise InvalidSpecError(f"importance {cfg.importance!r} needs data: pass a dataset with the job")
    return importance


def _build_pruner(
    model: nn.Module,
    cfg: StructuralPruning,
    importance: ChannelImportance,
    example_input: torch.Tensor,
    excluded: list[nn.Module],
    budget: bool,
) -> tp.pruner.BasePruner:
    """torch-pruning's pruner over the dependency graph; a graph it cannot build is explained."""
    try:
        return tp.pruner.BasePruner(
            model,
            example_input,
            importance=importance,
            global_pruning=cfg.global_ranking,
            pruning_ratio=MAX_CHANNEL_RATIO if budget else cfg.channel_sparsity,
            iterative_steps=MAX_BUDGET_STEPS if budget else cfg.iterative_steps,
            ignored_layers=excluded,
            round_to=cfg.round_to,
        )
    except EngineError:
        raise
    except Exception as exc:
        raise graph_error(exc) from exc


def output_layers(graph: tp.DependencyGraph) -> list[nn.Module]:
    """Conv/linear layers whose outputs reach a model output through width-preserving ops only."""
    stack = [node for node in graph.module2node.values() if not node.outputs]
    seen: set[int] = set()
    found: list[nn.Module] = []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, OUTPUT_PRODUCERS):
            found.append(node.module)
            continue
        stack.extend(node.inputs)
    return found


def default_speedup_fn(example_input: torch.Tensor, rounds: int = 15, warmup: int = 3) -> SpeedupFn:
    """Speedup of a candidate over the reference, timed interleaved on `example_input` (median of paired ratios)."""
    spec = LatencySpec(batch_size=1, repeats=max(3, rounds), warmup=warmup)
    return interleaved_speedup(example_input, spec, example_input.device)


def separate_speedup(latency_fn: LatencyFn) -> SpeedupFn:
    """A SpeedupFn from a per-module latency function; the reference is measured once."""
    before: dict[int, float] = {}

    def measure(reference: nn.Module, candidate: nn.Module) -> tuple[float, float, float]:
        if id(reference) not in before:
            before[id(reference)] = latency_fn(reference)
        b, a = before[id(reference)], latency_fn(candidate)
        return b / max(a, 1e-12), b, a

    return measure


# --- running ------------------------------------------------------------------------------------


def _step(
    pruner: tp.pruner.BasePruner,
    importance: ChannelImportance,
    model: nn.Module,
    data_fn: GradientFn | None,
    names: dict[nn.Module, str],
) -> None:
    importance.prepare(model, data_fn)
    try:
        # Interactive mode hands us one group at a time, so a failure can name the layers involved.
        for group in pruner.step(interactive=True):
            try:
                group.prune()
            except Exception as exc:
                raise _group_error(group, exc, names) from exc
    finally:
        importance.cleanup(model)


def _group_error(group: Any, exc: Exception, names: dict[nn.Module, str]) -> UnsupportedError:
    root = names.get(group[0].dep.target.module, "?")
    failing: Any = None
    tb = exc.__traceback__
    while tb is not None:  # the innermost torch-pruning Dependency being applied is the failing layer
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, tp.dependency.Dependency):
            failing = candidate
        tb = tb.tb_next
    layer = names.get(failing.target.module, "?") if failing is not None else root
    what = ""
    if failing is not None:
        side = "output" if _is_out_channel_dep(failing) else "input"
        what = f" ({type(failing.target.module).__name__}, {side} channels)"
    return UnsupportedError(
        f"could not remove channels from layer {layer!r}{what}, coupled to the channels of {root!r}: "
        f"{type(exc).__name__}: {exc}. torch-pruning cannot resolve this coupling (e.g. a concatenation feeding "
        f"a grouped convolution); exclude {root!r} (the layer whose channels reach {layer!r}) or use mask-based "
        "pruning"
    )


def _is_out_channel_dep(dep: Any) -> bool:
    return "out_channels" in getattr(dep.handler, "__name__", "")


def _count(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    macs, params = tp.utils.count_ops_and_params(model, example_input)
    return round(macs), round(params)  # per-sample averages: fractional with odd batch sizes


def _run(model: nn.Module, example_input: torch.Tensor, when: str) -> Any:
    """Forward `example_input`; on failure name the innermost layer that was running."""
    with _layer_stack(model) as stack:
        try:
            return model(example_input)
        except Exception as exc:
            where = f"layer {stack[-1]!r}" if stack and stack[-1] else "the model's forward() (outside any layer)"
            hint = (
                "its channel count is probably fixed in forward() (e.g. a view/reshape to a constant size) or "
                "coupled through an operation the dependency graph does not follow; exclude that layer and the "
                "layers feeding it, or use mask-based pruning"
                if when != "before pruning"
                else "check the example input's shape and dtype"
            )
            raise UnsupportedError(f"{when}, the model fails in {where}: {exc}; {hint}") from exc


@contextmanager
def _layer_stack(model: nn.Module) -> Iterator[list[str]]:
    stack: list[str] = []
    handles = []
    for name, m in model.named_modules():

        def pre(_m: nn.Module, _args: Any, name: str = name) -> None:
            stack.append(name)

        def post(_m: nn.Module, _args: Any, _out: Any) -> None:
            stack.pop()

        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()
