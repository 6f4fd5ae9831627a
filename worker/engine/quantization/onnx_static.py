"""Static int8 through ONNX Runtime: the fine-tuned model exported to ONNX, activation ranges calibrated on the
job's training rows, weights and activations int8 in QDQ format (`onnxruntime.quantization.quantize_static`)."""

from __future__ import annotations

import copy
import importlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.engine.datasets.rows import Rows
from worker.engine.errors import InvalidSpecError, UnsupportedError
from worker.engine.evaluation.onnx_latency import open_session  # CPU: int8 QDQ kernels are the CPU provider's
from worker.engine.export_onnx import export_onnx, session_feed
from worker.engine.models.calling import ModelInputs, num_rows, rows
from worker.engine.models.handle import LoadedModel
from worker.engine.quantization.base import Quantized, QuantizeRequest

CPU = torch.device("cpu")
ARTIFACT = "model.int8.onnx"
LOAD = "onnxruntime.InferenceSession('model.int8.onnx').run(None, {input_name: x.numpy()})"
CALIBRATION_BATCH = 32


class OrtModule(nn.Module):
    """An ONNX Runtime session called like the model (inputs in the job's order, first output as a tensor)."""

    def __init__(self, session: Any, names: list[str]) -> None:
        super().__init__()
        self.session, self.names = session, names

    def forward(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outs = self.session.run(None, session_feed(self.session, dict(zip(self.names, args, strict=True))))
        tensors = tuple(torch.from_numpy(np.asarray(o)) for o in outs)
        return tensors[0] if len(tensors) == 1 else tensors


def _batches(inputs: Mapping[str, Rows], count: int, step: int) -> Iterator[ModelInputs]:
    for start in range(0, count, step):
        yield rows(inputs, slice(start, min(start + step, count)))


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over the first training rows."""

    def __init__(self, session: Any, inputs: Mapping[str, Rows], count: int, step: int) -> None:
        self.feeds = iter([session_feed(session, b) for b in _batches(inputs, count, step)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)

    def rewind(self) -> None:  # calibration reads the rows once
        return None


def quantize_onnx_static(req: QuantizeRequest) -> Quantized:
    """Export the fine-tuned model to ONNX, calibrate on training rows, write `model.int8.onnx` (QDQ int8)."""
    state = req.state
    if state.data is None:
        raise InvalidSpecError(
            "quantization.method 'int8_static_onnx' calibrates activation ranges on training rows: give a dataset"
        )
    oq = importlib.import_module("onnxruntime.quantization")
    train = state.data.train_inputs()
    count = min(req.spec.calibration_rows(state.spec.data.calibration_samples), num_rows(train))
    out = state.out_dir / ARTIFACT
    module = copy.deepcopy(req.model.module).cpu().eval()
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        fp32, check = Path(tmp) / "model.fp32.onnx", None
        check = export_onnx(module, rows(train, slice(0, 1)), fp32, n_checks=1)
        step = CALIBRATION_BATCH if check.dynamic_batch else 1
        prepared = _preprocess(fp32, Path(tmp) / "model.prep.onnx")
        reader = _Reader(open_session(prepared, None), train, count, step)
        try:
            oq.quantize_static(
                str(prepared), str(out), reader, quant_format=oq.QuantFormat.QDQ, per_channel=req.spec.per_channel,
                activation_type=oq.QuantType.QInt8, weight_type=oq.QuantType.QInt8,
                calibrate_method=oq.CalibrationMethod.MinMax,
            )  # fmt: skip
        except Exception as exc:  # onnxruntime raises many types for graphs it cannot quantize
            raise UnsupportedError(f"ONNX Runtime could not quantize the model: {type(exc).__name__}: {exc}") from exc
    names = list(state.inputs or {})
    loaded = LoadedModel(
        module=OrtModule(open_session(out, None), names),
        format="torchscript",  # not read: measurement calls the module; the runtime says what it is
        task=req.model.task,
        supports_train_mode=False,
        fixed_batch_size=None if check.dynamic_batch else 1,
    )
    notes = [
        f"int8_static_onnx: activation ranges calibrated on {count} training rows (MinMax), weights int8 "
        f"{'per channel' if req.spec.per_channel else 'per tensor'}, QDQ format; runs on ONNX Runtime's CPU provider"
    ]
    if not check.dynamic_batch:
        notes.append("the ONNX export has a static batch size of 1: evaluated and timed row by row")
    return Quantized(out, loaded, CPU, "onnxruntime", LOAD, calibration_rows=count, notes=notes)


def _preprocess(src: Path, dst: Path) -> Path:
    """Shape inference and graph cleanup ONNX Runtime recommends before quantizing; the raw export if it fails."""
    try:
        importlib.import_module("onnxruntime.quantization.shape_inference").quant_pre_process(str(src), str(dst))
    except Exception:  # optional step: quantize_static also works on the raw export
        return src
    return dst
