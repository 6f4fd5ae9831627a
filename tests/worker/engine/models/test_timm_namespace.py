"""`timm/<name>` architectures for state-dicts (issue 10): random init, nothing downloaded, plain timm reloads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from prunekit.spec import JobSpec
from prunekit.spec.report import Report
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import InvalidModelError
from worker.engine.models.architectures import build_architecture, known_architectures


def test_timm_models_build_with_random_weights_and_are_listed() -> None:
    model = build_architecture("timm/resnet18", {"num_classes": 10})
    assert isinstance(model, timm.models.ResNet) and model.fc.out_features == 10
    assert "timm/resnet18" in known_architectures("timm")


@pytest.mark.parametrize("kwargs", [{"pretrained": True}, {"checkpoint_path": "/etc/passwd"}, {"cache_dir": "/tmp"}])
def test_timm_kwargs_that_fetch_weights_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidModelError, match="may not set"):
        build_architecture("timm/resnet18", kwargs)


def test_unknown_timm_model_names_alternatives() -> None:
    with pytest.raises(InvalidModelError, match=r"timm has e\.g\."):
        build_architecture("timm/resnet_does_not_exist")


def test_timm_state_dict_compresses_and_reloads_in_plain_timm(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    save_file(original.state_dict(), str(tmp_path / "resnet18.safetensors"))
    spec = JobSpec.model_validate(
        {
            "model": {"architecture": "timm/resnet18", "kwargs": {"num_classes": 10}, "input_shape": [3, 32, 32]},
            "pruning": {"method": "magnitude", "sparsity": 0.5},
            "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
        }
    )
    outputs = run_job(JobInputs(spec=spec, model_path=tmp_path / "resnet18.safetensors"), tmp_path / "out")
    report = Report.model_validate_json(outputs.report_path.read_text())
    assert report.sparsity.global_sparsity == pytest.approx(0.5, abs=0.01)
    reloaded = timm.create_model("resnet18", pretrained=False, num_classes=10)
    reloaded.load_state_dict(load_file(str(tmp_path / "out" / "model.safetensors")))
    assert float((reloaded.layer1[0].conv1.weight == 0).float().mean()) > 0
