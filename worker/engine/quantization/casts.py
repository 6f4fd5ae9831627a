"""float16 / bfloat16: every floating weight cast, written in the float artifact's own format."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunekit.spec import ModelSpec
from worker.engine.errors import UnsupportedError
from worker.engine.models.calling import caller
from worker.engine.models.loading import load_model
from worker.engine.models.saving import save_model
from worker.engine.quantization.base import Quantized, QuantizeRequest

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_STEMS = {"float16": "model.fp16", "bfloat16": "model.bf16"}


class CastInputs(nn.Module):
    """Feeds floating inputs in the weights' dtype, as a caller of the cast model does (ids and masks unchanged)."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype, names: list[str]) -> None:
        super().__init__()
        self.inner, self.dtype, self.names = inner, dtype, names
        self.call = caller(inner, names)

    def forward(self, *args: torch.Tensor) -> Any:
        cast = {n: a.to(self.dtype) if a.is_floating_point() else a for n, a in zip(self.names, args, strict=True)}
        return self.call(cast)


def cast_model(req: QuantizeRequest) -> Quantized:
    """Write the fine-tuned model with `spec.method`'s dtype in `out_fmt`; reload it and cast as a user would."""
    dtype = DTYPES[req.spec.method]
    if req.out_fmt == "export":
        raise UnsupportedError(
            f"quantization.method '{req.spec.method}' cannot rewrite a torch.export program's dtypes; use "
            "output.format 'torchscript' or 'state_dict'"
        )
    state = req.state
    cast = req.model.clone()
    cast.module.to(dtype)
    inputs = state.inputs or {}
    example = {k: (v.to(dtype) if v.is_floating_point() else v).cpu() for k, v in inputs.items()} or None
    notes: list[str] = []
    path = save_model(cast, state.out_dir, req.out_fmt, example, stem=_STEMS[req.spec.method], notes=notes)  # type: ignore[arg-type]
    fields: dict[str, object] = {"format": req.out_fmt, "task": req.model.task}
    if req.out_fmt == "state_dict":
        fields |= {"architecture": req.model.architecture, "kwargs": req.model.arch_kwargs}
    reloaded = load_model(path, ModelSpec.model_validate(fields))
    reloaded.module.to(state.device).to(dtype).eval()  # a state-dict loads into float32 parameters: cast back
    reloaded.module = CastInputs(reloaded.module, dtype, list(inputs))
    load = (
        f"the {req.out_fmt} artifact as before, then model.to(torch.{req.spec.method}); "
        f"feed floating inputs as torch.{req.spec.method}"
    )
    notes.append(f"{req.spec.method}: every floating weight cast; floating inputs are fed as {req.spec.method}")
    runtime = "eager" if req.out_fmt in ("state_dict", "huggingface") else req.out_fmt
    return Quantized(path, reloaded, state.device, runtime, load, notes=notes)
