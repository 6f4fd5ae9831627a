"""The local CLI prints engine and user text as is: square brackets are not rich markup, folders are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from prunekit.cli.exit_codes import ExitCode
from prunekit.cli.main import app

runner = CliRunner()


def test_engine_messages_keep_their_square_brackets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from worker.engine import api
    from worker.engine.errors import UnsupportedError

    def fail(*_args: object, **_kwargs: object) -> None:
        raise UnsupportedError("only classification models (output [batch, classes]) can be evaluated on data")

    monkeypatch.setattr(api, "run_job", fail)
    model, spec = tmp_path / "m.pt", tmp_path / "spec.yaml"
    model.write_bytes(b"x")
    spec.write_text("{}")
    result = runner.invoke(app, ["compress", str(model), "-s", str(spec), "-o", str(tmp_path / "o"), "--no-isolate"])
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "(output [batch, classes])" in " ".join(result.output.split())


def test_a_folder_as_data_is_called_a_folder(tmp_path: Path) -> None:
    model, spec, folder = tmp_path / "m.pt", tmp_path / "spec.yaml", tmp_path / "images"
    model.write_bytes(b"x")
    spec.write_text("{}")
    folder.mkdir()
    result = runner.invoke(app, ["compress", str(model), "-s", str(spec), "-d", str(folder), "-o", str(tmp_path / "o")])
    output = " ".join(result.output.split())
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "is a folder" in output and ".npz" in output and "not found" not in output
