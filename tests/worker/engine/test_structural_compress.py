"""Structural compress jobs: physically smaller, loads with plain torch, rebuildable from widths, ONNX-checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from prunekit.reporting.html import render_report_html
from prunekit.spec import JobSpec
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import UnsupportedError
from worker.engine.models.builtin import TinyResNet
from worker.engine.structural import rebuild_from_widths


@pytest.fixture(scope="module")
def tiny_resnet_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    save_file(TinyResNet(num_classes=10).state_dict(), str(path))
    return path


def _spec(**pruning: object) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model": {"architecture": "prunekit/tiny_resnet"},
            "pruning": {"method": "structural", "channel_sparsity": 0.5, **pruning},
            "finetune": {"epochs": 1, "batch_size": 128},
            "output": {"also_onnx": True},
            "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
        }
    )


@pytest.mark.parametrize("importance", ["magnitude", "taylor", "bn_scale"])
def test_structural_job(tiny_resnet_state: Path, digits_npz: Path, tmp_path: Path, importance: str) -> None:
    out = run_job(JobInputs(tiny_resnet_state, _spec(importance=importance), digits_npz), tmp_path, isolate=False)
    report = out.report
    assert report.output_format == "torchscript" and out.artifact_path is not None
    assert report.size_after.params_total < 0.5 * report.size_before.params_total
    assert report.structural is not None
    assert report.structural.macs_after < report.structural.macs_before
    assert report.structural.sidecar_files == ["model.state.safetensors", "model.widths.json"]
    assert "structural" not in report.extra  # typed field only
    assert 'id="structural"' in render_report_html(report.model_dump(mode="json"))
    assert report.extra["onnx"]["passed"] is True
    # also_onnx times the ONNX models too; removing channels is the one method that can speed either up.
    assert {r.runtime: r.speedup_possible for r in report.runtimes} == {"pytorch": True, "onnxruntime": True}
    assert all(r.after is not None and r.speedup is not None for r in report.runtimes), report.runtimes

    # The artifact loads with plain torch; the sidecar state-dict + widths rebuild the same model.
    scripted = torch.jit.load(str(out.artifact_path)).eval()
    meta = json.loads((tmp_path / "model.widths.json").read_text())
    rebuilt = rebuild_from_widths(lambda: TinyResNet(**meta["kwargs"]), meta["widths"])
    rebuilt.load_state_dict(load_file(str(tmp_path / "model.state.safetensors")))
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), rebuilt.eval()(x))


def test_torchscript_input_cannot_be_pruned_structurally(
    torchscript_model: Path, digits_npz: Path, tmp_path: Path
) -> None:
    spec = JobSpec.model_validate({"pruning": {"method": "structural"}, "finetune": {"epochs": 0}})
    with pytest.raises(UnsupportedError):
        run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path, isolate=False)
