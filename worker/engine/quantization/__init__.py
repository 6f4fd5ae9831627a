"""The optional quantization stage of compress jobs (after pruning and fine-tuning): int8 or half precision."""

from worker.engine.quantization.base import Quantized, QuantizeRequest
from worker.engine.quantization.registry import QUANTIZERS, quantize

__all__ = ["QUANTIZERS", "QuantizeRequest", "Quantized", "quantize"]
