"""Issue acceptance: 90% global magnitude pruning with L1+L2 fine-tuning, for every input format, via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from prunekit.cli.main import app
from tests.support.digits import accuracy, digits_arrays
from worker.engine.models.builtin import DigitsCNN

SPEC = {
    "model": {"architecture": "prunekit/digits_cnn", "kwargs": {"num_classes": 10}},
    "pruning": {"method": "magnitude", "scope": "global", "sparsity": 0.9},
    "finetune": {
        "epochs": 8,
        "batch_size": 64,
        "optimizer": {"name": "adam", "lr": 0.002},
        "regularizers": {"l1": 1e-5, "l2": 1e-4},
    },
    "gates": {"max_accuracy_drop": 0.02, "min_sparsity": 0.895},
    "seed": 0,
}


def _load_plain(path: Path, fmt: str) -> torch.nn.Module:
    """Load the artifact with plain PyTorch, as a user without prunekit would."""
    if fmt == "torchscript":
        return torch.jit.load(str(path)).eval()
    if fmt == "export":
        return torch.export.load(str(path)).module()
    model = DigitsCNN(num_classes=10)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "fmt"),
    [("torchscript_model", "torchscript"), ("export_model", "export"), ("state_dict_model", "state_dict")],
)
def test_compress_90_percent_all_formats(
    request: pytest.FixtureRequest, fixture: str, fmt: str, digits_npz: Path, tmp_path: Path
) -> None:
    model_path: Path = request.getfixturevalue(fixture)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["compress", str(model_path), "--spec", str(spec_path), "--data", str(digits_npz), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output

    report = json.loads((out / "report.json").read_text())
    assert report["input_format"] == fmt and report["output_format"] == fmt
    artifact = out / report["artifact_name"]
    module = _load_plain(artifact, fmt)

    # Measured sparsity on prunable layers within 0.5 points of the target, pruned weights exactly zero.
    params = dict(module.named_parameters())
    pruned = [layer for layer in report["sparsity"]["layers"] if layer["pruned"]]
    assert pruned, "no layer was pruned"
    zeros = sum(int((params[layer["name"]] == 0).sum()) for layer in pruned)
    total = sum(params[layer["name"]].numel() for layer in pruned)
    assert abs(zeros / total - 0.9) <= 0.005
    assert abs(report["sparsity"]["global_sparsity"] - zeros / total) < 1e-9
    # The classifier (last linear) is kept by default.
    assert all(not layer["pruned"] for layer in report["sparsity"]["layers"] if layer["name"].endswith("4.weight"))

    # The report's validation accuracy is what an independent evaluation of the artifact finds.
    arrays = digits_arrays()
    independent = accuracy(module, arrays["x_val"], arrays["y_val"])
    assert report["after"]["val"]["accuracy"] == pytest.approx(independent, abs=1e-9)
    assert report["before"]["val"]["accuracy"] - independent <= 0.02
    assert report["status"] == "passed"
    assert {g["name"] for g in report["gates"]} == {"max_accuracy_drop", "min_sparsity"}
    assert report["isolation"]["child_process"] is True
    assert len(report["history"]) >= 1
    assert np.isfinite(report["latency_after"]["median_ms"])
