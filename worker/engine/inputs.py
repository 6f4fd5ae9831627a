"""A job's model inputs: the batch-1 sample we run (from data, the spec or an exported program), checked once.

The spec declares inputs with `model.inputs` (names, shapes, dtypes) or `model.input_shape` (one float32 input
"x"). Data feeds them as described in `worker/engine/data.py`. The first forward pass on the sample is checked
here, so that inputs the model cannot take fail as invalid_data / invalid_spec with both shapes named.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

import torch

from prunekit.spec.job import InputSpec
from worker.engine.errors import EngineError, InvalidDataError, InvalidSpecError
from worker.engine.models.calling import ModelInputs, batch_of, caller, inputs_to
from worker.engine.models.handle import LoadedModel

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}
# Inputs data may leave out, and their value: every token attended to, every token in segment 0.
DEFAULT_FILL: dict[str, int] = {"attention_mask": 1, "token_type_ids": 0}
_PATH_RE = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.\-+@~]+){2,}")


def describe(inputs: Mapping[str, torch.Tensor]) -> str:
    """'name: dtype [shape]' for every input, e.g. 'input_ids: int64 [1, 16]'."""
    return ", ".join(f"{k}: {str(v.dtype).removeprefix('torch.')} {list(v.shape)}" for k, v in inputs.items())


def _random_input(spec: InputSpec, gen: torch.Generator) -> torch.Tensor:
    shape, dtype = [1, *spec.shape], TORCH_DTYPES[spec.dtype]
    if spec.name in DEFAULT_FILL and spec.low is None and spec.high is None:
        return torch.full(shape, DEFAULT_FILL[spec.name], dtype=dtype)
    if dtype == torch.bool:
        return torch.zeros(shape, dtype=dtype)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(dtype)
    low = spec.low or 0
    return torch.randint(low, spec.high if spec.high is not None else low + 2, shape, generator=gen, dtype=dtype)


def random_sample(specs: list[InputSpec], seed: int) -> ModelInputs:
    """A batch-1 sample of every declared input (see DEFAULT_FILL and InputSpec.low/high)."""
    gen = torch.Generator().manual_seed(seed)
    return {s.name: _random_input(s, gen) for s in specs}


def program_sample(model: LoadedModel) -> ModelInputs | None:
    """The first row of the example inputs an exported program was saved with (dtypes kept), if any."""
    ep = model.exported_program
    if ep is None or ep.example_inputs is None:
        return None
    args, kwargs = ep.example_inputs
    try:
        names = list(inspect.signature(model.module.forward).parameters)
    except (TypeError, ValueError):
        names = []
    named = {(names[i] if i < len(names) else f"input_{i}"): a for i, a in enumerate(args)}
    named.update(kwargs or {})
    if not named or not all(isinstance(t, torch.Tensor) and t.dim() > 0 for t in named.values()):
        return None
    return {k: v[:1].detach().clone() for k, v in named.items()}


def check_sample(sample: Mapping[str, torch.Tensor], specs: list[InputSpec] | None) -> None:
    """The data's sample shapes must be the declared ones; raises InvalidSpecError naming both."""
    for spec in specs or []:
        given = list(sample[spec.name].shape[1:])
        if given != list(spec.shape):
            field = "model.input_shape" if spec.name == "x" and len(specs or []) == 1 else f"model.inputs '{spec.name}'"
            raise InvalidSpecError(f"{field} {list(spec.shape)} does not match the data's sample shape {given}")


def _reason(exc: BaseException) -> str:
    """The last line of an error (TorchScript's come with a traceback), without file paths, at most 300 chars."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return _PATH_RE.sub("<path>", lines[-1] if lines else type(exc).__name__)[:300]


def _program_takes(model: LoadedModel) -> str:
    """', the program takes x: float32 [s0, 1, 8, 8]' for exported programs, '' otherwise."""
    ep = model.exported_program
    if ep is None:
        return ""
    user = set(ep.graph_signature.user_inputs)
    vals = {n.name: n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder" and n.name in user}
    shown = {k: v for k, v in vals.items() if isinstance(v, torch.Tensor)}
    return f"; the program takes {describe(shown)}" if shown else ""


_CONV_AXES = {"Conv1d": "length", "Conv2d": "height, width", "Conv3d": "depth, height, width"}


def _first_layer_takes(module: torch.nn.Module) -> str:
    """'; its first layer, Conv2d, takes [batch, 1, height, width]' from the first conv or linear layer, if any."""
    for _, sub in module.named_modules():
        kind = getattr(sub, "original_name", type(sub).__name__)  # TorchScript keeps the class name there
        if kind == "Embedding":
            return ""  # token ids: the layers after it say nothing about the input's shape
        channels, features = getattr(sub, "in_channels", None), getattr(sub, "in_features", None)
        if kind in _CONV_AXES and isinstance(channels, int):
            return f"; its first layer, {kind}, takes [batch, {channels}, {_CONV_AXES[kind]}]"
        if kind == "Linear" and isinstance(features, int):
            return f"; its first layer, Linear, takes [batch, {features}]"
    return ""


def first_forward(model: LoadedModel, sample: Mapping[str, torch.Tensor], device: torch.device, from_data: bool) -> Any:
    """Run the sample once (as the model's batch size); a failure is the inputs' fault, said without server paths."""
    batch = inputs_to(batch_of(sample, model.fixed_batch_size or 1), device)
    try:
        with torch.inference_mode():
            return caller(model.module, list(batch))(batch)
    except EngineError:
        raise
    except Exception as exc:  # the model's own error: a shape or dtype it cannot take
        given = (
            f"the data's inputs ({describe(batch)})"
            if from_data
            else f"a sample of the spec's inputs ({describe(batch)})"
        )
        hint = (
            "give data whose arrays have the shape and dtype the model takes, or set model.inputs"
            if from_data
            else "set model.input_shape / model.inputs to what the model takes"
        )
        if from_data and any(not v.is_floating_point() for v in batch.values()):
            hint += " (integer arrays are fed as integers: declare a float dtype in model.inputs to cast them)"
        error = InvalidDataError if from_data else InvalidSpecError
        takes = _program_takes(model) or _first_layer_takes(model.module)
        raise error(f"the model cannot run on {given}: {_reason(exc)}{takes}; {hint}") from None
