"""The local CLI: `spec` commands and `compress` exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from prunekit.cli.exit_codes import ExitCode
from prunekit.cli.main import app
from worker.engine.threads import default_threads

runner = CliRunner()


def test_spec_schema_prints_json_schema() -> None:
    result = runner.invoke(app, ["spec", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["title"] == "JobSpec"


def test_spec_validate_reports_field_path(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("pruning: {method: magnitude, sparsity: 1.5}\n")
    result = runner.invoke(app, ["spec", "validate", str(path)])
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "pruning.sparsity" in result.output


def test_spec_validate_ok(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("pruning: {method: nm, n: 2, m: 4}\n")
    result = runner.invoke(app, ["spec", "validate", str(path)])
    assert result.exit_code == 0 and '"sparsity": 0.5' in result.stdout


def test_missing_model_file(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("{}")
    result = runner.invoke(app, ["compress", str(tmp_path / "nope.pt"), "--spec", str(spec), "--out", str(tmp_path)])
    assert result.exit_code == ExitCode.INVALID_INPUT and "not found" in result.output


def test_gate_missed_exit_code(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "pruning": {"sparsity": 0.5},
                "finetune": {"epochs": 1},
                "gates": {"min_sparsity": 0.9},
                "evaluation": {"latency": {"repeats": 3}},
            }
        )
    )
    args = [
        "compress",
        str(torchscript_model),
        "-s",
        str(spec),
        "-d",
        str(digits_npz),
        "-o",
        str(tmp_path / "o"),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == ExitCode.GATE_MISSED, result.output
    assert "MISSED" in result.output


def test_corrupt_model_exit_code(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"PK\x03\x04 truncated")
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: {input_shape: [1, 8, 8]}\n")
    result = runner.invoke(app, ["compress", str(model), "-s", str(spec), "-o", str(tmp_path / "o")])
    assert result.exit_code == ExitCode.INVALID_INPUT and "invalid_model" in result.output


def test_compress_runs_the_sandboxed_job_with_the_threads_asked_for(
    torchscript_model: Path, digits_npz: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"pruning": {"sparsity": 0.5}, "finetune": {"epochs": 0}}))
    args = ["compress", str(torchscript_model), "-s", str(spec), "-d", str(digits_npz), "-o", str(tmp_path / "o")]
    # Neither the default nor the inherited OMP_NUM_THREADS=1: only the option can set this many.
    wanted = default_threads() + 2
    result = runner.invoke(app, [*args, "--threads", str(wanted), "--json"])
    assert result.exit_code == ExitCode.OK, result.output
    assert json.loads(result.stdout)["environment"]["threads"] == wanted
    assert runner.invoke(app, [*args, "--threads", "0"]).exit_code == 2  # refused by the option itself


def test_compress_takes_a_save_pretrained_folder(tmp_path: Path) -> None:
    from tests.worker.engine.huggingface import builders

    folder = builders.gpt2(tmp_path / "tiny-gpt2")
    spec = tmp_path / "spec.yaml"
    spec.write_text("pruning: {method: magnitude, sparsity: 0.5}\nevaluation: {latency: {repeats: 3, warmup: 1}}\n")
    result = runner.invoke(app, ["compress", str(folder), "--spec", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["input_format"] == "huggingface" and report["artifact_name"] == "model.tar"
    unpacked = builders.extract(tmp_path / "out" / "model.tar", tmp_path / "unpacked")
    assert unpacked.name == "model" and (unpacked / "tokenizer.json").is_file()


def test_compress_refuses_a_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("pruning: {method: magnitude, sparsity: 0.5}\n")
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app, ["compress", str(tmp_path / "empty"), "--spec", str(spec), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "config.json" in result.output
