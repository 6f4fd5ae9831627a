"""N:M on CNNs (issue 13): layers whose input size is not divisible by M (mobilenet_v2's first conv has 3*3*3 = 27
inputs per output, its depthwise convs 9) are left dense and listed with their share; strict refuses them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from prunekit.spec import JobSpec
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import UnsupportedError


def _spec(strict: bool) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model": {
                "format": "state_dict", "architecture": "torchvision/mobilenet_v2", "kwargs": {"num_classes": 10},
                "input_shape": [3, 32, 32],
            },
            "pruning": {"method": "nm", "n": 2, "m": 4, "strict": strict},
            "finetune": {"epochs": 0},
            "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mobilenet") / "mobilenet_v2.safetensors"
    save_file(torchvision.models.mobilenet_v2(weights=None, num_classes=10).state_dict(), str(path))
    return path


def test_layers_that_cannot_hold_two_of_four_are_skipped_and_listed(mobilenet: Path, tmp_path: Path) -> None:
    report = run_job(JobInputs(mobilenet, _spec(strict=False)), tmp_path / "out", isolate=False).report
    stats = report.sparsity
    skipped = {s.name: s for s in stats.skipped_layers}
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    params = dict(model.named_parameters())
    widths = {n: p[0].numel() for n, p in params.items() if p.dim() == 4}
    assert set(skipped) == {n for n, w in widths.items() if w % 4}  # the first conv (27) and the depthwise (9)
    first = skipped["features.0.0.weight"]
    assert first.shape == [32, 3, 3, 3] and "27" in first.reason
    pruned = [layer for layer in stats.layers if layer.pruned]
    total = sum(layer.params for layer in pruned) + sum(params[n].numel() for n in skipped)
    assert first.share == pytest.approx(864 / total)
    assert all(layer.sparsity == pytest.approx(0.5) for layer in pruned)
    assert not any(layer.pruned for layer in stats.layers if layer.name in skipped)
    assert any("left dense" in n and "features.0.0.weight" in n for n in report.notes)


def test_strict_refuses_and_names_every_such_layer(mobilenet: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match=r"features\.0\.0\.weight' \(27\).*strict is set"):
        run_job(JobInputs(mobilenet, _spec(strict=True)), tmp_path / "out", isolate=False)
