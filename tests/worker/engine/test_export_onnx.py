"""ONNX export checked with onnxruntime against PyTorch outputs."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunekit.spec.pruning import StructuralPruning
from worker.engine.errors import UnsupportedError
from worker.engine.export_onnx import export_onnx
from worker.engine.models.builtin import TinyResNet
from worker.engine.structural import prune_structurally


def _pruned_tiny_resnet() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(1, 1, 8, 8)
    return prune_structurally(TinyResNet().eval(), StructuralPruning(channel_sparsity=0.5), x).module, x


def test_pruned_model_exports_and_matches(tmp_path: Path) -> None:
    module, x = _pruned_tiny_resnet()
    check = export_onnx(module, x, tmp_path / "out" / "model.onnx")
    assert check.passed, check
    assert check.exporter == "dynamo" and check.dynamic_batch
    assert check.max_abs_diff <= 1e-5 < check.max_abs_reference
    assert check.inputs_checked == 3
    assert check.opset >= 17
    assert (tmp_path / "out" / "model.onnx").stat().st_size == check.size_bytes > 0
    assert not module.training


class _Noisy(nn.Module):
    """Adds fresh noise on every call: PyTorch and onnxruntime cannot agree, so the check must say so."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + torch.randn_like(self.fc(x))


def test_mismatch_is_reported_not_hidden(tmp_path: Path) -> None:
    check = export_onnx(_Noisy().eval(), torch.randn(2, 4), tmp_path / "noisy.onnx")
    assert not check.passed
    assert check.max_abs_diff > check.atol


def test_torchscript_module_uses_the_legacy_exporter(tmp_path: Path) -> None:
    module, x = _pruned_tiny_resnet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(module)
    check = export_onnx(scripted, x, tmp_path / "scripted.onnx")
    assert check.passed and check.exporter == "torchscript"


def test_missing_onnxruntime_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "onnxruntime" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(UnsupportedError, match="needs the packages onnxruntime"):
        export_onnx(nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "m.onnx")


def test_models_with_several_named_inputs_export_and_match(tmp_path: Path) -> None:
    from tests.worker.engine.huggingface import builders

    folder = builders.bert_classifier(tmp_path / "bert")
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = torch.randint(0, 300, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    check = export_onnx(model, {"input_ids": ids, "attention_mask": mask}, tmp_path / "bert.onnx")
    assert check.passed and check.inputs_checked == 3, check

    import onnxruntime as ort

    names = [i.name for i in ort.InferenceSession(str(tmp_path / "bert.onnx")).get_inputs()]
    assert names == ["input_ids", "attention_mask"]
