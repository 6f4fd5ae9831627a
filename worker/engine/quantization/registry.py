"""quantization.method -> the function that writes and reloads its artifact."""

from __future__ import annotations

from collections.abc import Callable

from worker.engine.quantization.base import Quantized, QuantizeRequest
from worker.engine.quantization.casts import cast_model
from worker.engine.quantization.onnx_static import quantize_onnx_static
from worker.engine.quantization.torch_int8 import quantize_int8

QUANTIZERS: dict[str, Callable[[QuantizeRequest], Quantized]] = {
    "int8_dynamic": quantize_int8,
    "int8_weight_only": quantize_int8,
    "int8_static_onnx": quantize_onnx_static,
    "float16": cast_model,
    "bfloat16": cast_model,
}


def quantize(req: QuantizeRequest) -> Quantized:
    """Write the quantized artifact of `req.model` into the job's output folder and reload it."""
    return QUANTIZERS[req.spec.method](req)
