"""Physical channel removal with torch-pruning's dependency graph.

Every layer coupled to a removed channel shrinks with it: the producing conv/linear and its norm,
residual adds, concatenations, depthwise/grouped convs and the next layers' inputs. Works on eager
`nn.Module`s; TorchScript and torch.export programs are refused with `UnsupportedError`.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunekit.spec.pruning import StructuralPruning
from worker.engine.errors import EngineError, InvalidModelError, InvalidSpecError, UnsupportedError
from worker.engine.models.outputs import output_tensors
from worker.engine.structural.importance import ChannelImportance, GradientFn, make_importance

LatencyFn = Callable[[nn.Module], float]
"""Latency of one forward pass of the module (any unit, used only as a ratio)."""

Widths = dict[str, dict[str, Any]]
"""Module name -> new sizes, e.g. {"layer1.0.conv1": {"in_channels": 32, "out_channels": 32, "groups": 1}}."""

MAX_CHANNEL_RATIO = 0.98  # budget searches never remove more than this share of a layer's channels
MAX_BUDGET_STEPS = 60  # pruning steps a MACs/latency budget search may take
MIN_RATIO_STEP = 0.01  # smallest increase of the channel ratio between two budget-search steps

# Layers whose outputs define the model's output width when nothing but reshapes/activations follow them.
_OUTPUT_PRODUCERS: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.LSTM,
    nn.MultiheadAttention,
    nn.Embedding,
)
# Per module type: the attributes recorded in `widths` and restored by `rebuild_from_widths`.
_WIDTH_ATTRS: tuple[tuple[type[nn.Module], tuple[str, ...]], ...] = (
    (nn.modules.conv._ConvNd, ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    (nn.modules.batchnorm._NormBase, ("num_features",)),  # BatchNorm*, InstanceNorm*
    (nn.GroupNorm, ("num_channels", "num_groups")),
    (nn.LayerNorm, ("normalized_shape",)),
    (nn.PReLU, ("num_parameters",)),
)


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
) -> StructuralResult:
    """Remove channels from a copy of `model` per `cfg`; `model` itself is left unchanged.

    `data_fn` (forward+backward on job batches) is required by importance 'taylor'; `latency_fn`
    is used by `target_speedup` (default: median CPU time of `example_input`).
    """
    started = time.perf_counter()
    _check_supported(model)
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

    model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    _check_parameters_are_wrapped(model)
    names = {m: n for n, m in model.named_modules()}
    shapes_before = _direct_shapes(model)
    with torch.no_grad():
        out_before = _run(model, example_input, "before pruning")
    macs_before, params_before = _count(model, example_input)

    budget = cfg.target_macs_reduction is not None or cfg.target_speedup is not None
    try:
        pruner = tp.pruner.BasePruner(
            model,
            example_input,
            importance=importance,
            global_pruning=cfg.global_ranking,
            pruning_ratio=MAX_CHANNEL_RATIO if budget else cfg.channel_sparsity,
            iterative_steps=MAX_BUDGET_STEPS if budget else cfg.iterative_steps,
            ignored_layers=_excluded_modules(model, cfg.exclude),
            round_to=cfg.round_to,
        )
    except EngineError:
        raise
    except Exception as exc:
        raise UnsupportedError(f"torch-pruning could not build the dependency graph of this model: {exc}") from exc
    ratios: list[float] = pruner.per_step_pruning_ratio
    if budget:
        # Budget searches choose each step's ratio as they go; the pruner reads this list at every step.
        ratios = [0.0] * (MAX_BUDGET_STEPS + 1)
        pruner.per_step_pruning_ratio = ratios
    # Layers producing the model's outputs keep their output width (known only once the graph exists).
    for layer in _output_layers(pruner.DG):
        pruner.ignored_layers.extend(layer.modules())

    latency_before: float | None = None
    latency_after: float | None = None
    if not budget:
        for _ in range(cfg.iterative_steps):
            _step(pruner, importance, model, data_fn, names)
        steps = cfg.iterative_steps
    else:
        if cfg.target_speedup is not None:
            latency_fn = latency_fn or default_latency_fn(example_input)
            latency_before = latency_fn(model)
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
                assert latency_fn is not None and latency_before is not None
                latency_after = latency_fn(model)
                reached = latency_before / max(latency_after, 1e-12)
            else:
                reached = macs_before / max(_count(model, example_input)[0], 1)

    with torch.no_grad():
        out_after = _run(model, example_input, "after removing channels")
    _check_same_output_shapes(out_before, out_after)
    macs_after, params_after = _count(model, example_input)
    model.train(was_training)
    return StructuralResult(
        module=model,
        widths=_widths(model, names, shapes_before),
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


def rebuild_from_widths(arch_builder: Callable[[], nn.Module], widths: Widths) -> nn.Module:
    """Build the architecture, then shrink the layers named in `widths`; load the pruned state dict into it.

    Parameters of shrunk layers are left uninitialized: `load_state_dict(strict=True)` fills them.
    """
    module = arch_builder()
    modules = dict(module.named_modules())
    for name, sizes in widths.items():
        if name not in modules:
            raise InvalidModelError(f"layer widths name {name!r}, which this architecture does not have")
        _resize(name, modules[name], sizes)
    return module


def default_latency_fn(example_input: torch.Tensor, runs: int = 15, warmup: int = 3) -> LatencyFn:
    """Median wall time (seconds) of `runs` forward passes of `example_input` after `warmup` passes."""

    @torch.inference_mode()
    def measure(module: nn.Module) -> float:
        for _ in range(warmup):
            module(example_input)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            module(example_input)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return measure


# --- checks -------------------------------------------------------------------------------------


def _check_supported(model: object) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise UnsupportedError(
            "TorchScript models cannot be pruned structurally: their layer sizes are compiled into the code. "
            "Upload a state dict with its architecture (or prune with masks instead)"
        )
    if isinstance(model, torch.export.ExportedProgram) or _is_exported_graph(model):
        raise UnsupportedError(
            "torch.export programs (.pt2) cannot be pruned structurally: their layers are graph operations on "
            "loose parameters, not nn.Conv2d/nn.Linear modules, so torch-pruning cannot find which channels "
            "are coupled. Upload a state dict with its architecture (or prune with masks instead)"
        )
    if not isinstance(model, nn.Module):
        raise UnsupportedError(f"expected a torch.nn.Module, got {type(model).__name__}")
    for name, m in model.named_modules():
        if torch.nn.utils.parametrize.is_parametrized(m) or any(
            n.endswith("_orig") for n, _ in m.named_parameters(recurse=False)
        ):
            raise UnsupportedError(
                f"layer {name!r} has parametrizations or torch.nn.utils.prune masks attached; make them "
                "permanent (torch.nn.utils.prune.remove / parametrize.remove_parametrizations) first"
            )


def _is_exported_graph(model: object) -> bool:
    if not isinstance(model, torch.fx.GraphModule):
        return False
    # torch.export(...).module() calls aten ops directly; fx.symbolic_trace keeps call_module nodes (fine).
    return any(
        node.op == "call_function" and str(node.target).startswith(("aten.conv", "aten.linear", "aten.addmm"))
        for node in model.graph.nodes
    )


def _check_parameters_are_wrapped(model: nn.Module) -> None:
    """Refuse matrix-shaped parameters outside standard layers: torch-pruning would guess their channel dim."""
    owned: set[int] = set()
    layer_types = tuple(_OUTPUT_PRODUCERS) + tuple(t for t, _ in _WIDTH_ATTRS)
    for m in model.modules():
        if isinstance(m, layer_types):
            owned.update(id(p) for p in m.parameters())
    for name, p in model.named_parameters():
        if id(p) not in owned and sum(1 for s in p.shape if s > 1) >= 2:
            raise UnsupportedError(
                f"parameter {name!r} (shape {list(p.shape)}) is not owned by a standard layer "
                "(nn.Conv*/nn.Linear/norm), so which of its dimensions holds channels cannot be resolved; "
                "exclude its module or use mask-based pruning"
            )


def _excluded_modules(model: nn.Module, patterns: list[str]) -> list[nn.Module]:
    """Modules whose output channels stay; their input channels still follow the layers feeding them."""
    named = [(n, m) for n, m in model.named_modules() if n]
    excluded: list[nn.Module] = []
    for pattern in patterns:
        hits = [m for n, m in named if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            example = f" (e.g. {named[0][0]!r})" if named else ""
            raise InvalidSpecError(f"exclude pattern {pattern!r} matches no module name{example}")
        excluded.extend(hits)
    return excluded


def _output_layers(graph: tp.DependencyGraph) -> list[nn.Module]:
    """Conv/linear layers whose outputs reach a model output through width-preserving ops only."""
    stack = [node for node in graph.module2node.values() if not node.outputs]
    seen: set[int] = set()
    found: list[nn.Module] = []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, _OUTPUT_PRODUCERS):
            found.append(node.module)
            continue
        stack.extend(node.inputs)
    return found


def _check_same_output_shapes(before: Any, after: Any) -> None:
    shapes_before = [tuple(t.shape) for t in output_tensors(before)]
    shapes_after = [tuple(t.shape) for t in output_tensors(after)]
    if shapes_before != shapes_after:
        raise UnsupportedError(
            f"removing channels changed the model's output shapes from {shapes_before} to {shapes_after}; "
            "exclude the layers that produce the outputs"
        )


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


# --- widths -------------------------------------------------------------------------------------


def _direct_shapes(model: nn.Module) -> dict[str, dict[str, tuple[int, ...]]]:
    return {
        name: {
            n: tuple(t.shape)
            for n, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
            if t is not None
        }
        for name, m in model.named_modules()
    }


def _widths(model: nn.Module, names: dict[nn.Module, str], before: dict[str, dict[str, tuple[int, ...]]]) -> Widths:
    after = _direct_shapes(model)
    widths: Widths = {}
    for m, name in names.items():
        if after.get(name) == before.get(name):
            continue
        attrs = _attrs_of(m)
        if attrs is None:  # not a standard layer: record raw tensor shapes
            widths[name] = {"shapes": {n: list(s) for n, s in after[name].items()}}
        else:
            widths[name] = {
                a: (list(v) if isinstance(v, tuple) else int(v)) for a, v in ((a, getattr(m, a)) for a in attrs)
            }
    return widths


def _attrs_of(m: nn.Module) -> tuple[str, ...] | None:
    for cls, attrs in _WIDTH_ATTRS:
        if isinstance(m, cls):
            return attrs
    return None


def _resize(name: str, m: nn.Module, sizes: dict[str, Any]) -> None:
    """Set `m`'s size attributes and reallocate its parameters/buffers to match."""
    attrs = _attrs_of(m)
    if attrs is None:
        shapes = sizes.get("shapes")
        if not isinstance(shapes, dict):
            raise InvalidModelError(f"layer widths for {name!r} ({type(m).__name__}) need a 'shapes' entry")
        for tensor_name, shape in shapes.items():
            _replace(m, tensor_name, tuple(int(s) for s in shape))
        return
    unknown = set(sizes) - set(attrs)
    if unknown:
        raise InvalidModelError(f"layer widths for {name!r} ({type(m).__name__}) have unknown keys {sorted(unknown)}")
    for attr, value in sizes.items():
        setattr(m, attr, tuple(int(v) for v in value) if isinstance(value, list) else int(value))
    if isinstance(m, nn.modules.conv._ConvNd):
        k = tuple(m.kernel_size)
        if m.transposed:
            weight_shape = (m.in_channels, m.out_channels // m.groups, *k)
        else:
            weight_shape = (m.out_channels, m.in_channels // m.groups, *k)
        _replace(m, "weight", weight_shape)
        _replace(m, "bias", (m.out_channels,))
    elif isinstance(m, nn.Linear):
        _replace(m, "weight", (m.out_features, m.in_features))
        _replace(m, "bias", (m.out_features,))
    elif isinstance(m, nn.modules.batchnorm._NormBase):
        for t in ("weight", "bias", "running_mean", "running_var"):
            _replace(m, t, (m.num_features,))
    elif isinstance(m, nn.GroupNorm):
        for t in ("weight", "bias"):
            _replace(m, t, (m.num_channels,))
    elif isinstance(m, nn.LayerNorm):
        for t in ("weight", "bias"):
            _replace(m, t, tuple(m.normalized_shape))
    elif isinstance(m, nn.PReLU):
        _replace(m, "weight", (m.num_parameters,))


def _replace(m: nn.Module, tensor_name: str, shape: tuple[int, ...]) -> None:
    """Swap a parameter or buffer for an uninitialized one of `shape` (same dtype/device); None stays None."""
    old = getattr(m, tensor_name, None)
    if old is None:
        return
    new = torch.empty(shape, dtype=old.dtype, device=old.device)
    if isinstance(old, nn.Parameter):
        setattr(m, tensor_name, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        setattr(m, tensor_name, new)
