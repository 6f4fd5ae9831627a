"""What structural pruning refuses, and how its failures are explained: unsupported formats, loose parameters,
exclude patterns, dependency graphs torch-pruning cannot build, changed output shapes."""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from worker.engine.errors import InvalidSpecError, UnsupportedError
from worker.engine.models.outputs import output_tensors
from worker.engine.structural.widths import WIDTH_ATTRS

# Layers whose outputs define the model's output width when nothing but reshapes/activations follow them.
OUTPUT_PRODUCERS: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.LSTM,
    nn.MultiheadAttention,
    nn.Embedding,
)


def check_supported(model: object) -> None:
    """Refuse TorchScript, torch.export programs and modules with parametrizations or prune masks attached."""
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


def loose_parameters(model: nn.Module, excluded: list[nn.Module]) -> list[nn.Parameter]:
    """Matrix-shaped parameters outside standard layers, all inside excluded modules (else refused, with advice).

    torch-pruning would guess their channel dimension; inside an excluded module they are kept whole instead.
    """
    owned: set[int] = set()
    # Of the recurrent layers torch-pruning knows LSTM only (in OUTPUT_PRODUCERS); GRU/RNN weights count as loose.
    layer_types = tuple(OUTPUT_PRODUCERS) + tuple(t for t, _ in WIDTH_ATTRS if t is not nn.RNNBase)
    for m in model.modules():
        if isinstance(m, layer_types):
            owned.update(id(p) for p in m.parameters())
    kept = {id(p) for m in excluded for p in m.parameters()}
    loose = []
    for name, p in model.named_parameters():
        if id(p) in owned or sum(1 for s in p.shape if s > 1) < 2:
            continue
        if id(p) not in kept:
            owner = name.rsplit(".", 1)[0] if "." in name else None
            advice = f"exclude its module (exclude: [{owner!r}]) or" if owner else "it belongs to the model itself:"
            raise UnsupportedError(
                f"parameter {name!r} (shape {list(p.shape)}) is not owned by a standard layer "
                "(nn.Conv*/nn.Linear/norm), so which of its dimensions holds channels cannot be resolved; "
                f"{advice} use mask-based pruning"
            )
        loose.append(p)
    return loose


def excluded_modules(model: nn.Module, patterns: list[str]) -> list[nn.Module]:
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


def coupled_to(pruner: tp.pruner.BasePruner, params: list[nn.Parameter]) -> list[nn.Module]:
    """Layers whose channels are coupled to one of ``params``: they keep their channels so that those stay whole."""
    if not params:
        return []
    targets = {id(p) for p in params}
    found: list[nn.Module] = []
    groups = pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types)
    for group in groups:
        modules = [dep.target.module for dep, _ in group]
        if any(id(m) in targets for m in modules):
            found.extend(m for m in modules if isinstance(m, nn.Module))
    return found


def graph_error(exc: Exception) -> UnsupportedError:
    """Why torch-pruning could not build the dependency graph, in words a user can act on."""
    if isinstance(exc, ZeroDivisionError) and _in_reshape_mapping(exc):
        return UnsupportedError(
            "structural pruning cannot follow this model's channel reshapes: a view/reshape splits the channel "
            "dimension into groups (e.g. ShuffleNet's channel shuffle, x.view(batch, groups, channels // groups, "
            "h, w)), and torch-pruning 1.6 cannot map removed channels across it (excluding layers does not help, "
            "the graph itself cannot be built). Use mask-based pruning instead: method 'channel' zeroes whole "
            "channels, 'magnitude' or 'nm' zero single weights"
        )
    return UnsupportedError(f"torch-pruning could not build the dependency graph of this model: {exc}")


def _in_reshape_mapping(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if "reshape" in tb.tb_frame.f_code.co_name:
            return True
        tb = tb.tb_next
    return False


def check_same_output_shapes(before: Any, after: Any) -> None:
    """Refuse a pruned model whose outputs changed shape."""
    shapes_before = [tuple(t.shape) for t in output_tensors(before)]
    shapes_after = [tuple(t.shape) for t in output_tensors(after)]
    if shapes_before != shapes_after:
        raise UnsupportedError(
            f"removing channels changed the model's output shapes from {shapes_before} to {shapes_after}; "
            "exclude the layers that produce the outputs"
        )
