"""The quantization section: methods, and combinations refused at validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from prunekit.spec import JobSpec


def test_defaults_and_runtime() -> None:
    spec = JobSpec.model_validate({"quantization": {"method": "int8_static_onnx"}})
    assert spec.quantization is not None and spec.quantization.runtime == "onnxruntime"
    assert spec.quantization.per_channel and spec.quantization.calibration_rows(64) == 64
    assert JobSpec().quantization is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"quantization": {"method": "int4"}}, "int8_dynamic"),
        ({"output": {"format": "sparse_state_dict"}}, "sparse_state_dict"),
        ({"gates": {"max_latency_ms": 5.0}}, "gates.runtime 'onnxruntime'"),
        ({"kind": "sweep", "sweep": {"sparsities": [0.5]}}, "compress jobs"),
    ],
)
def test_refused_combinations(extra: dict[str, object], message: str) -> None:
    spec = {"quantization": {"method": "int8_static_onnx"}, **extra}
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate(spec)


def test_onnx_latency_gates_on_onnxruntime_are_accepted() -> None:
    spec = {"quantization": {"method": "int8_static_onnx"}, "gates": {"max_latency_ms": 5, "runtime": "onnxruntime"}}
    assert JobSpec.model_validate(spec).gates.runtime == "onnxruntime"
