"""Calling a model on named inputs, whatever its kind, and reading its main output.

`ModelInputs` maps input names to batched tensors, in the order the model takes them. TorchScript and plain
modules get them positionally; modules whose forward names every input (Hugging Face models) get keywords;
exported programs get them as they were exported (positional, keyword or both). Outputs may be a tensor, a
tuple, a dict or a Hugging Face `ModelOutput`: the main output is `logits` if there is one, else the first tensor.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch

from worker.engine.datasets.rows import Rows
from worker.engine.errors import UnsupportedError
from worker.engine.models.outputs import output_tensors

__all__ = [
    "ModelInputs",
    "as_inputs",
    "as_row_inputs",
    "batch_of",
    "call_model",
    "caller",
    "inputs_to",
    "keyword_names",
    "main_output",
    "num_rows",
    "pad_rows",
    "rows",
]

ModelInputs = dict[str, torch.Tensor]
Caller = Callable[[Mapping[str, torch.Tensor]], Any]
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def as_inputs(x: torch.Tensor | Mapping[str, torch.Tensor], name: str = "x") -> ModelInputs:
    """A single tensor as one input named `name`; a mapping as a dict (order kept)."""
    return {name: x} if isinstance(x, torch.Tensor) else dict(x)


def as_row_inputs(x: Rows | Mapping[str, Rows], name: str = "x") -> dict[str, Rows]:
    """Like `as_inputs`, for a split's inputs that may be lazy rows (see worker/engine/datasets/rows.py)."""
    return dict(x) if isinstance(x, Mapping) else {name: x}


def rows(inputs: Mapping[str, Rows], index: torch.Tensor | slice) -> ModelInputs:
    """The same rows (batch entries) of every input, as tensors."""
    return {k: v[index] for k, v in inputs.items()}


def num_rows(inputs: Mapping[str, Rows]) -> int:
    """The batch size (rows of the first input)."""
    return len(next(iter(inputs.values())))


def batch_of(sample: torch.Tensor | Mapping[str, torch.Tensor], n: int) -> ModelInputs:
    """`n` copies of a batch-1 sample, for every input."""
    return {k: v.expand(n, *v.shape[1:]).contiguous() for k, v in as_inputs(sample).items()}


def pad_rows(inputs: Mapping[str, torch.Tensor], n: int) -> ModelInputs:
    """Zero-pad every input to `n` rows (the padding's outputs are to be dropped)."""
    return {k: torch.cat([v, v.new_zeros((n - len(v), *v.shape[1:]))]) if len(v) < n else v for k, v in inputs.items()}


def inputs_to(inputs: Mapping[str, torch.Tensor], device: torch.device | str) -> ModelInputs:
    """Every input moved to `device`."""
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}


def _exported_keywords(module: torch.nn.Module) -> set[str] | None:
    """The keyword inputs of a module made by ExportedProgram.module(); None for other modules."""
    spec = getattr(module, "_in_spec", None)
    if spec is None or getattr(spec, "num_children", 0) != 2:
        return None
    return {str(k) for k in spec.child(1).context or []}


def _forward_names(module: torch.nn.Module) -> set[str]:
    """Names the module's forward takes by keyword (none for TorchScript, whose calls are positional here)."""
    if isinstance(module, torch.jit.ScriptModule):
        return set()
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params if p.kind not in _POSITIONAL}


def keyword_names(module: torch.nn.Module, names: list[str]) -> set[str]:
    """Which of these inputs `module` takes by keyword: as exported, or all when its forward names every one."""
    keywords = _exported_keywords(module)
    if keywords is not None:
        return keywords & set(names)
    return set(names) if len(names) > 1 and set(names) <= _forward_names(module) else set()


def caller(module: torch.nn.Module, names: list[str]) -> Caller:
    """A function that calls `module` on inputs with these names; how (positional or keyword) is decided once."""
    keywords = keyword_names(module, names)

    def call(inputs: Mapping[str, torch.Tensor]) -> Any:
        args = [v for k, v in inputs.items() if k not in keywords]
        return module(*args, **{k: v for k, v in inputs.items() if k in keywords})

    return call


def main_output(out: Any) -> torch.Tensor:
    """`logits` of a dict or ModelOutput output, else the first tensor of the output."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    found = output_tensors(out)
    if not found:
        raise UnsupportedError(f"the model returned no tensor (got {type(out).__name__}); it must return its logits")
    return found[0]


def call_model(module: torch.nn.Module, inputs: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Run `module` on one batch of inputs and return its main output (see `main_output`)."""
    batch = as_inputs(inputs)
    return main_output(caller(module, list(batch))(batch))
