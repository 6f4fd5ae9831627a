"""Quantized artifacts load and run with plain torch / onnxruntime, and their accuracy is the report's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.support.digits import accuracy, digits_arrays
from tests.worker.engine.quantization.conftest import quantized_job
from worker.engine.errors import UnsupportedError
from worker.engine.models.builtin import DigitsCNN

STAGES = ["dense", "pruned", "fine_tuned", "quantized"]
SIZE_GATE = 600_000  # bytes: between the int8 digits MLP (~320 kB as TorchScript) and its float32 form (~1.2 MB)


def _check_stages(report, artifact: str) -> None:  # type: ignore[no-untyped-def]
    assert [s.name for s in report.stages] == STAGES
    quantized = report.stages[-1]
    assert quantized.delivered and quantized.artifact == artifact == report.artifact_name
    assert report.stages[1].val is not None  # pruned: one validation pass before fine-tuning
    assert report.after is not None and quantized.val == report.after.val
    # The gates hold the delivered (quantized) model's numbers.
    drop = next(g for g in report.gates if g.name == "max_accuracy_drop")
    assert report.before is not None and report.before.val.accuracy is not None
    assert drop.value == pytest.approx(report.before.val.accuracy - quantized.val.accuracy)


@pytest.mark.parametrize("method", ["int8_dynamic", "int8_weight_only"])
def test_torch_int8_runs_with_plain_torch_and_is_small(
    method: str, mlp_model: Path, digits_npz: Path, tmp_path: Path
) -> None:
    gates = {"max_accuracy_drop": 1, "max_artifact_bytes": SIZE_GATE}
    report = quantized_job(mlp_model, digits_npz, tmp_path, "digits_mlp", method, gates=gates)
    _check_stages(report, "model.int8.pt")
    # The size gate holds for what is delivered: the int8 file passes it, the fine-tuned float file would not.
    size = next(g for g in report.gates if g.name == "max_artifact_bytes")
    assert size.passed and size.value == (tmp_path / "model.int8.pt").stat().st_size
    assert report.stages[2].artifact_bytes is not None and report.stages[2].artifact_bytes > SIZE_GATE
    module = torch.jit.load(str(tmp_path / "model.int8.pt")).eval()  # plain torch, no prunekit loader
    arrays = digits_arrays()
    assert report.after is not None
    assert accuracy(module, arrays["x_val"], arrays["y_val"]) == pytest.approx(report.after.val.accuracy, abs=1e-9)
    fine_tuned = report.stages[2]
    assert fine_tuned.artifact_bytes is not None and report.stages[-1].artifact_bytes is not None
    assert report.stages[-1].artifact_bytes < 0.35 * fine_tuned.artifact_bytes
    size_gate = report.size_after.artifact_bytes
    assert size_gate == (tmp_path / "model.int8.pt").stat().st_size


def test_static_onnx_int8_runs_with_plain_onnxruntime(state_dict_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    gates = {"max_accuracy_drop": 1, "max_latency_ms": 1000, "runtime": "onnxruntime"}
    report = quantized_job(state_dict_model, digits_npz, tmp_path, "digits_cnn", "int8_static_onnx", gates=gates)
    _check_stages(report, "model.int8.onnx")
    assert report.quantization is not None and report.quantization.calibration_rows == 128
    session = ort.InferenceSession(str(tmp_path / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    arrays = digits_arrays()
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: arrays["x_val"]})[0]
    assert report.after is not None
    assert float((np.argmax(logits, 1) == arrays["y_val"]).mean()) == pytest.approx(report.after.val.accuracy)
    latency = next(g for g in report.gates if g.name == "max_latency_ms")
    assert latency.runtime == "onnxruntime" and report.latency_after is not None
    assert latency.value == report.latency_after.median_ms and report.latency_after.runtime == "onnxruntime"


def test_float16_state_dict_loads_into_the_architecture(
    state_dict_model: Path, digits_npz: Path, tmp_path: Path
) -> None:
    report = quantized_job(
        state_dict_model, digits_npz, tmp_path, "digits_cnn", "float16", gates={"max_accuracy_drop": 1}
    )
    _check_stages(report, "model.fp16.safetensors")
    weights = load_file(str(tmp_path / "model.fp16.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    model = DigitsCNN(num_classes=10).half()
    model.load_state_dict(weights)
    arrays = digits_arrays()
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(arrays["x_val"]).half()).float()
    assert report.after is not None
    assert float((out.argmax(1).numpy() == arrays["y_val"]).mean()) == pytest.approx(report.after.val.accuracy)


def test_int8_dynamic_of_a_torchscript_upload_is_refused_before_pruning(
    torchscript_model: Path, digits_npz: Path, tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedError, match="int8_static_onnx"):
        quantized_job(torchscript_model, digits_npz, tmp_path, "digits_cnn", "int8_dynamic")
    assert not (tmp_path / "model.pt").exists()
