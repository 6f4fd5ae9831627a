"""Quantization after pruning and fine-tuning: int8 (PyTorch or ONNX Runtime) or a half-precision cast. Torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

QuantizationMethod = Literal["int8_dynamic", "int8_weight_only", "int8_static_onnx", "float16", "bfloat16"]

# Where each method's artifact runs: what latency is timed on and what the gates hold.
ONNX_METHODS: tuple[QuantizationMethod, ...] = ("int8_static_onnx",)
INT8_TORCH_METHODS: tuple[QuantizationMethod, ...] = ("int8_dynamic", "int8_weight_only")
CAST_METHODS: tuple[QuantizationMethod, ...] = ("float16", "bfloat16")


class QuantizationSpec(BaseModel):
    """An optional stage after pruning and fine-tuning; its artifact is the one delivered and gated."""

    model_config = ConfigDict(extra="forbid")

    method: QuantizationMethod = Field(
        description="int8_dynamic: Linear/LSTM weights int8, activations quantized per batch at run time "
        "(torch.ao, CPU; for Linear-heavy models: MLPs, transformers), delivered as TorchScript. "
        "int8_weight_only: Linear weights stored int8 with per-channel scales, computed in float32 (TorchScript). "
        "int8_static_onnx: weights and activations int8 with ranges calibrated on training rows (ONNX Runtime "
        "quantize_static, QDQ; for CNNs), delivered as model.int8.onnx. float16 / bfloat16: every floating "
        "weight cast, in the un-quantized output's format."
    )
    calibration_samples: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="int8_static_onnx: training rows the activation ranges are calibrated on "
        "(default: data.calibration_samples).",
    )
    per_channel: bool = Field(
        True, description="int8_static_onnx: one scale per output channel of each weight (else one per tensor)."
    )
    keep_unquantized: bool = Field(
        True,
        description="Also keep the fine-tuned (un-quantized) artifact in the output folder; the quantized one is "
        "delivered (report.artifact_name) either way.",
    )

    def calibration_rows(self, data_default: int) -> int:
        """The rows static quantization calibrates on."""
        return self.calibration_samples if self.calibration_samples is not None else data_default

    @property
    def runtime(self) -> Literal["pytorch", "onnxruntime"]:
        """The runtime the delivered artifact runs on."""
        return "onnxruntime" if self.method in ONNX_METHODS else "pytorch"
