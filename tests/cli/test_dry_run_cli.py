"""`prunekit compress --dry-run`: a summary on stderr, report.json in --out, exit 0 or 2 when problems were found."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.torch import save_file
from typer.testing import CliRunner

from prunekit.cli.exit_codes import ExitCode
from prunekit.cli.main import app
from worker.engine.models.builtin import DigitsCNN

runner = CliRunner()


def test_dry_run_of_a_checkpoint_folder_prunes_nothing(tmp_path: Path) -> None:
    from tests.worker.engine.huggingface import builders

    folder = builders.gpt2(tmp_path / "tiny-gpt2")
    spec = tmp_path / "spec.yaml"
    spec.write_text("pruning: {method: magnitude, sparsity: 0.5}\nfinetune: {epochs: 3}\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["compress", str(folder), "--spec", str(spec), "--out", str(out), "--dry-run"])
    assert result.exit_code == ExitCode.OK, result.output
    assert "detected: huggingface" in result.output and "no problems" in result.output
    report = json.loads((out / "report.json").read_text())
    dry = report["dry_run"]
    assert report["kind"] == "dry_run" and dry["task"] == "causal_lm" and dry["inputs_source"] == "model config"
    assert dry["prunable"] and dry["output_formats"][0] == "huggingface" and "torchscript" not in dry["output_formats"]
    assert report["artifact_name"] is None and not (out / "model.tar").exists()


def test_dry_run_with_data_that_does_not_fit_exits_as_invalid_input(tmp_path: Path) -> None:
    model = tmp_path / "digits.safetensors"
    save_file(DigitsCNN().state_dict(), str(model))
    data = tmp_path / "small.npz"
    np.savez(data, x_train=np.zeros((8, 1, 6, 6), np.float32), y_train=np.zeros(8, np.int64))
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: {architecture: prunekit/digits_cnn, input_shape: [1, 8, 8]}\n")
    out = tmp_path / "out"
    args = ["compress", str(model), "-s", str(spec), "-d", str(data), "-o", str(out), "--dry-run", "--no-isolate"]
    result = runner.invoke(app, args)
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert "problem input_mismatch" in result.output and "1 problem(s)" in result.output
    problems = json.loads((out / "report.json").read_text())["dry_run"]["problems"]
    assert [p["code"] for p in problems] == ["input_mismatch"]
