"""Parquet tables (issue 10) read into lazy rows, and data the model cannot take refused as invalid_data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from typer.testing import CliRunner

from prunekit.cli.exit_codes import ExitCode
from prunekit.cli.main import app
from prunekit.spec import DataSpec, JobSpec
from prunekit.spec.job import InputSpec
from prunekit.spec.report import Report
from tests.support.digits import accuracy, digits_arrays
from worker.engine.api import JobInputs, run_job
from worker.engine.data import load_dataset, split_index
from worker.engine.datasets.rows import LazyRows
from worker.engine.errors import InvalidDataError

IMAGE = [InputSpec(name="x", shape=[1, 8, 8])]


def _digits_table(path: Path, n: int | None = None, **columns: list[object]) -> tuple[Path, np.ndarray, np.ndarray]:
    arrays = digits_arrays()
    x = np.concatenate([arrays["x_train"], arrays["x_val"]])[:n]
    y = np.concatenate([arrays["y_train"], arrays["y_val"]])[:n]
    table = pa.table({"pixels": [row.ravel().tolist() for row in x], "digit": y.tolist(), **columns})
    pq.write_table(table, path, row_group_size=500)
    return path, x, y


def test_parquet_round_trip(tmp_path: Path) -> None:
    path, x, y = _digits_table(tmp_path / "d.parquet")
    spec = DataSpec(input_field="pixels", label_field="digit", val_fraction=0.25)
    ds = load_dataset(path, spec, IMAGE)
    assert isinstance(ds.x_train, LazyRows) and tuple(ds.x_train.shape) == (len(x) - 449, 1, 8, 8)
    train_idx, val_idx = split_index(len(x), spec)
    assert torch.equal(ds.x_val[slice(0, len(val_idx))], torch.from_numpy(x[val_idx.numpy()]))
    assert ds.y_train is not None and torch.equal(ds.y_train, torch.from_numpy(y[train_idx.numpy()]))


def test_parquet_through_a_compress_job(torchscript_model: Path, tmp_path: Path) -> None:
    path, x, y = _digits_table(tmp_path / "d.parquet")
    spec = JobSpec.model_validate(
        {
            "model": {"input_shape": [1, 8, 8]},
            "data": {"input_field": "pixels", "label_field": "digit"},
            "pruning": {"method": "magnitude", "sparsity": 0.5},
            "finetune": {"epochs": 1, "batch_size": 32},
            "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
        }
    )
    out = run_job(JobInputs(spec=spec, model_path=torchscript_model, data_path=path), tmp_path / "o", isolate=False)
    report = Report.model_validate_json(out.report_path.read_text())
    _, val_idx = split_index(len(x), spec.data)
    val = val_idx.numpy()
    independent = accuracy(torch.jit.load(str(tmp_path / "o" / report.artifact_name)), x[val], y[val])
    assert report.after is not None and report.after.val.accuracy == pytest.approx(independent, abs=1e-9)


def test_parquet_errors_name_the_column_and_row(tmp_path: Path) -> None:
    path, _, _ = _digits_table(tmp_path / "d.parquet", n=20)
    with pytest.raises(InvalidDataError, match=r"no column 'x' \(it has: pixels, digit\); set data.input_field"):
        load_dataset(path, DataSpec(), IMAGE)
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"x": [[1.0, 2.0]] * 5 + [[1.0]], "label": [0] * 6}), ragged)
    with pytest.raises(InvalidDataError, match=r"row 5 of column 'x' has 1 values but row 0 has 2"):
        load_dataset(ragged, DataSpec())
    negative = tmp_path / "negative.parquet"
    pq.write_table(pa.table({"x": [[1.0, 2.0]] * 6, "label": [0, 1, 2, -1, 0, 0]}), negative)
    with pytest.raises(InvalidDataError, match=r"row 3 of label column 'label'"):
        load_dataset(negative, DataSpec())


def test_flattened_data_for_a_cnn_is_invalid_data_without_paths(torchscript_model: Path, tmp_path: Path) -> None:
    """Was an internal TorchScript traceback with the worker's paths: now invalid_data, exit 2, both shapes named."""
    arrays = digits_arrays()
    data = tmp_path / "flat.npz"
    np.savez(data, x_train=arrays["x_train"].reshape(len(arrays["x_train"]), -1), y_train=arrays["y_train"])
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"pruning": {"sparsity": 0.5}, "finetune": {"epochs": 0}}))
    args = ["compress", str(torchscript_model), "-s", str(spec), "-d", str(data), "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    text = " ".join(result.output.split())
    assert "invalid_data" in text and "x: float32 [1, 64]" in text
    assert "first layer, Conv2d, takes [batch, 1, height, width]" in text
    assert "/tmp" not in text and "/work" not in text and ".py" not in text and "Traceback" not in text
