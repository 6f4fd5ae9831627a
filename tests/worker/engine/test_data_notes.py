"""Datasets: a folder is named as one (with the formats accepted); raw uint8 pixels are fed as is, with a note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prunekit.spec import DataSpec
from worker.engine.data import load_dataset
from worker.engine.errors import InvalidDataError


def test_a_folder_is_not_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError) as err:
        load_dataset(tmp_path, DataSpec())
    assert "is a folder" in err.value.message and ".npz" in err.value.message and ".safetensors" in err.value.message
    with pytest.raises(InvalidDataError, match="not found"):
        load_dataset(tmp_path / "missing.npz", DataSpec())


def test_uint8_images_are_fed_raw_with_a_note(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=np.arange(20) % 10)
    ds = load_dataset(path, DataSpec())
    assert float(ds.x_train.max()) > 1.0  # not rescaled behind the user's back
    assert any("uint8" in n and "0-255" in n for n in ds.notes)
    floats = tmp_path / "f.npz"
    np.savez(floats, x_train=x.astype(np.float32) / 255, y_train=np.arange(20) % 10)
    assert load_dataset(floats, DataSpec()).notes == []


def test_the_note_reaches_the_report(torchscript_model: Path, tmp_path: Path) -> None:
    from prunekit.spec import JobSpec
    from worker.engine.api import JobInputs, run_job

    x = np.random.default_rng(0).integers(0, 256, (40, 1, 8, 8), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=np.arange(40) % 10)
    spec = JobSpec.model_validate({"finetune": {"epochs": 0}, "evaluation": {"latency": {"repeats": 3, "warmup": 1}}})
    report = run_job(JobInputs(torchscript_model, spec, path), tmp_path / "out", isolate=False).report
    assert any("uint8" in n for n in report.notes)
