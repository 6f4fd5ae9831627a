"""What a quantization method needs, checked at load time, before any pruning or fine-tuning is spent."""

from __future__ import annotations

from prunekit.spec.quantization import CAST_METHODS, INT8_TORCH_METHODS, QuantizationSpec
from worker.engine.errors import InvalidSpecError, UnsupportedError
from worker.engine.job_state import JobState
from worker.engine.models.handle import LoadedModel


def check_quantizable(state: JobState, model: LoadedModel, out_fmt: str, spec: QuantizationSpec) -> None:
    """Raise with what to change when `spec.method` cannot quantize this model, output format or data."""
    if spec.method in INT8_TORCH_METHODS and (model.is_scripted or model.exported_program is not None):
        raise UnsupportedError(
            f"quantization.method '{spec.method}' swaps the nn.Linear modules of an eager model and this "
            f"{model.format} model has none to swap: give a state-dict (with model.architecture) or a Hugging Face "
            "checkpoint, or use int8_static_onnx"
        )
    if spec.method in INT8_TORCH_METHODS and model.hf_source is not None:
        # The int8 artifact is a traced TorchScript program: a transformers model traced at one batch and sequence
        # shape fails at any other (its masking code turns shapes into constants), so it would not be deliverable.
        raise UnsupportedError(
            f"quantization.method '{spec.method}' delivers a traced TorchScript program, and a Hugging Face model "
            "traced at one input shape does not run at another: use bfloat16 or float16 (a checkpoint that loads "
            "with from_pretrained)"
        )
    if spec.method == "int8_static_onnx" and (state.data is None or len(state.data.x_train) == 0):
        raise InvalidSpecError(
            "quantization.method 'int8_static_onnx' calibrates activation ranges on training rows: give a dataset"
        )
    if spec.method in CAST_METHODS and out_fmt == "export":
        raise UnsupportedError(
            f"quantization.method '{spec.method}' cannot rewrite a torch.export program's dtypes; use output.format "
            "'torchscript' or 'state_dict'"
        )
