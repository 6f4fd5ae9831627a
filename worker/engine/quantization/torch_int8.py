"""int8 in plain PyTorch: dynamic (torch.ao quantize_dynamic) and weight-only; both delivered as TorchScript.

torch.ao.quantization is deprecated in favour of torchao, but torchao's int8 tensors need torchao to load;
torch.ao's quantized modules script into a file that plain `torch.jit.load` runs (torch is pinned exactly).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from prunekit.spec import ModelSpec
from worker.engine.errors import UnsupportedError
from worker.engine.models.handle import LoadedModel
from worker.engine.models.loading import load_model
from worker.engine.models.saving import save_model
from worker.engine.quantization.base import Quantized, QuantizeRequest
from worker.engine.quantization.weight_only import Int8WeightOnlyLinear

CPU = torch.device("cpu")
LOAD_TORCHSCRIPT = "torch.jit.load('{name}').eval()(x)  # CPU; inputs as for the original model"


def _eager_copy(model: LoadedModel, method: str) -> nn.Module:
    if model.is_scripted or model.exported_program is not None:
        raise UnsupportedError(
            f"quantization.method '{method}' swaps the nn.Linear modules of an eager model; this {model.format} "
            "model has none: give a state-dict (with model.architecture) or a Hugging Face checkpoint, or use "
            "int8_static_onnx"
        )
    return copy.deepcopy(model.module).cpu().eval()


def _linear_count(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Linear) for m in module.modules())


def _swap_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Linear:  # subclasses (e.g. NonDynamicallyQuantizableLinear) may be read as weights
            setattr(module, name, Int8WeightOnlyLinear(child))
        else:
            _swap_linears(child)


def quantize_module(module: nn.Module, method: str) -> tuple[nn.Module, int]:
    """A quantized copy of an eager module and how many Linear layers it quantized."""
    linears = _linear_count(module)
    if linears == 0:
        raise UnsupportedError(
            f"quantization.method '{method}' quantizes nn.Linear layers and the model has none; for CNNs use "
            "int8_static_onnx"
        )
    if method == "int8_dynamic":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao's notice (see the module docstring)
            warnings.simplefilter("ignore", UserWarning)  # quantized tensor creation notice, same reason
            return torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8), linears
    _swap_linears(module)
    swapped = sum(isinstance(m, Int8WeightOnlyLinear) for m in module.modules())
    return module, swapped


def quantize_int8(req: QuantizeRequest) -> Quantized:
    """Quantize the fine-tuned model's Linear layers to int8 and write `model.int8.pt` (TorchScript)."""
    module, count = quantize_module(_eager_copy(req.model, req.spec.method), req.spec.method)
    state = req.state
    inputs = {k: v.cpu() for k, v in (state.inputs or {}).items()} or None
    quantized = LoadedModel(module=module, format="torchscript", task=req.model.task)
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        path = save_model(quantized, state.out_dir, "torchscript", inputs, stem="model.int8", notes=notes)
    reloaded = load_model(path, ModelSpec.model_validate({"format": "torchscript", "task": req.model.task}))
    reloaded.module.to(CPU).eval()
    kind = "weights and activations (per batch)" if req.spec.method == "int8_dynamic" else "weights only"
    notes.append(f"{req.spec.method}: {count} Linear layers int8 ({kind}); runs on the CPU")
    return Quantized(path, reloaded, CPU, "torchscript", LOAD_TORCHSCRIPT.format(name=path.name), notes=notes)
