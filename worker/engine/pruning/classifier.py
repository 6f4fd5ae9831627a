"""Which parameters produce a model's outputs, read off the autograd graph of one forward pass.

Walking back from every output tensor, the first operation that consumes a weight (a parameter of 2+ dims, seen
directly or through view-like steps such as a transpose) is an output layer, and the walk stops there: squeezenet's
1x1 conv classifier, GPT-2's ``lm_head`` (tied to ``wte``), every head of a multi-output model. Eager, TorchScript
and torch.export modules all run autograd, so one method serves all three.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from worker.engine.models.calling import as_inputs, caller
from worker.engine.models.outputs import output_tensors

# Autograd nodes that only re-view one tensor: a weight seen through them is still that weight.
_VIEW_LIKE = {
    "TBackward",
    "ViewBackward",
    "UnsafeViewBackward",
    "ReshapeAliasBackward",
    "ExpandBackward",
    "PermuteBackward",
    "TransposeBackward",
    "SqueezeBackward",
    "UnsqueezeBackward",
    "ToCopyBackward",
    "CloneBackward",
    "AliasBackward",
    "AsStridedBackward",
    "SliceBackward",
    "SelectBackward",
    "ContiguousBackward",
}
_MAX_CHAIN = 16
_MAX_NODES = 200_000


def _node_kind(fn: Any) -> str:
    return re.sub(r"\d+$", "", type(fn).__name__)


def _param_behind(fn: Any, params: dict[int, torch.Tensor]) -> torch.Tensor | None:
    """The parameter an autograd edge reads, through view-like nodes only; None for data paths."""
    for _ in range(_MAX_CHAIN):
        if fn is None:
            return None
        variable = getattr(fn, "variable", None)  # AccumulateGrad: a leaf tensor
        if variable is not None:
            return params.get(id(variable))
        nexts = [f for f, _ in fn.next_functions if f is not None]
        if _node_kind(fn) not in _VIEW_LIKE or len(nexts) != 1:
            return None
        fn = nexts[0]
    return None


def _walk(outputs: list[torch.Tensor], params: dict[int, torch.Tensor]) -> list[torch.Tensor] | None:
    """Parameters read by the first weight-consuming node on every path back from the outputs."""
    found: dict[int, torch.Tensor] = {}
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    if not stack:
        return None
    seen: set[int] = set()
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if len(seen) > _MAX_NODES:
            return None
        edges = [(f, _param_behind(f, params)) for f, _ in fn.next_functions if f is not None]
        read = [p for _, p in edges if p is not None]
        if any(p.dim() >= 2 for p in read):
            found.update((id(p), p) for p in read)
            continue
        stack.extend(f for f, p in edges if p is None)
    return list(found.values())


@contextmanager
def _traceable(module: torch.nn.Module) -> Iterator[None]:
    """Every parameter requires grad (so it appears in the graph) and the module is in eval mode, then restored."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    switched = module.training and _set_train(module, False)
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        if switched:
            _set_train(module, True)


def _set_train(module: torch.nn.Module, on: bool) -> bool:
    """False where the module cannot switch (torch.export programs run in the mode they were exported in)."""
    try:
        module.train(on)
    except NotImplementedError:
        return False
    return True


def output_parameters(
    module: torch.nn.Module, example_input: torch.Tensor | Mapping[str, torch.Tensor]
) -> list[torch.Tensor] | str:
    """Parameters of the layers whose outputs are the model's outputs; a string says why they cannot be found."""
    params: dict[int, torch.Tensor] = {id(p): p for p in module.parameters() if p.is_floating_point()}
    if not params:
        return "the model has no floating-point parameters"
    try:
        with _traceable(module), torch.enable_grad(), torch.jit.optimized_execution(False):
            inputs = as_inputs(example_input)
            out = caller(module, list(inputs))(inputs)
            found = _walk(output_tensors(out), params)
    except Exception as exc:  # any model error: the caller falls back and says why
        return f"a sample forward pass failed ({type(exc).__name__}: {str(exc)[:200]})"
    if found is None:
        return "the outputs carry no autograd graph"
    if not found:
        return "no weight reaches the outputs"
    return found
