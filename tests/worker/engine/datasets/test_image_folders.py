"""Image-folder archives (issue 10): lazily decoded PNGs through a compress job, and bad members named."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from prunekit.spec import DataSpec, JobSpec
from prunekit.spec.report import Report
from tests.support.digits import accuracy
from tests.support.images import digit_folder, read_split, zip_folder
from tests.worker.engine.huggingface import builders
from worker.engine.api import JobInputs, run_job
from worker.engine.data import load_dataset
from worker.engine.datasets.images import image_settings
from worker.engine.datasets.rows import LazyRows
from worker.engine.errors import InvalidDataError


@pytest.fixture(scope="module")
def digits_pngs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digit_folder(tmp_path_factory.mktemp("pngs") / "digits")


def _spec(extra: dict[str, Any] | None = None) -> JobSpec:
    return JobSpec.model_validate(
        {
            "pruning": {"method": "magnitude", "sparsity": 0.5},
            "finetune": {"epochs": 1, "batch_size": 32},
            "evaluation": {"batch_size": 64, "latency": {"repeats": 3, "warmup": 1}},
            **(extra or {}),
        }
    )


def _run(spec: JobSpec, model: Path, data: Path, out: Path) -> Report:
    outputs = run_job(JobInputs(spec=spec, model_path=model, data_path=data), out, isolate=False)
    return Report.model_validate_json(outputs.report_path.read_text())


def test_vit_on_a_png_archive_matches_an_independent_evaluation(digits_pngs: Path, tmp_path: Path) -> None:
    """The acceptance case: a ViT checkpoint archive and digits as PNGs; the artifact re-evaluated by transformers."""
    model = builders.archive(builders.vit_classifier(tmp_path / "vit"), tmp_path / "vit.tar.gz")
    data = zip_folder(digits_pngs, tmp_path / "digits.zip")
    report = _run(_spec(), model, data, tmp_path / "out")
    assert report.data["classes"] == [str(d) for d in range(10)]
    assert report.data["val_samples"] == 449 and report.data["split"] == "given"
    x_val, y_val = read_split(digits_pngs, "val")
    artifact = builders.extract(tmp_path / "out" / report.artifact_name, tmp_path / "unpacked")
    hf = transformers.AutoModelForImageClassification.from_pretrained(artifact).eval()
    with torch.no_grad():
        logits = hf(pixel_values=torch.from_numpy(x_val)).logits
    independent = float((logits.argmax(1).numpy() == y_val).mean())
    assert report.after is not None and report.after.val.accuracy == pytest.approx(independent, abs=1e-9)


def test_cnn_on_a_tar_archive_matches_an_independent_evaluation(
    digits_pngs: Path, torchscript_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "digits.tar"
    with tarfile.open(data, "w") as tf:
        tf.add(digits_pngs, "digits")
    report = _run(_spec({"model": {"input_shape": [1, 8, 8]}}), torchscript_model, data, tmp_path / "out")
    x_val, y_val = read_split(digits_pngs, "val")
    before = accuracy(torch.jit.load(str(torchscript_model)).eval(), x_val, y_val)
    after = accuracy(torch.jit.load(str(tmp_path / "out" / report.artifact_name)).eval(), x_val, y_val)
    assert report.before is not None and report.before.val.accuracy == pytest.approx(before, abs=1e-9)
    assert report.after is not None and report.after.val.accuracy == pytest.approx(after, abs=1e-9)
    assert before > 0.9  # the PNGs carry the digits (8-bit rounding aside)


def test_rows_stay_lazy_and_the_split_is_seeded(tmp_path: Path) -> None:
    """Without val/ the training images are split by the seed; nothing is decoded until a batch is asked for."""
    data = zip_folder(digit_folder(tmp_path / "train-only", val=False), tmp_path / "d.zip", top=None)
    a = load_dataset(data, DataSpec(val_fraction=0.25), None)
    b = load_dataset(data, DataSpec(val_fraction=0.25), None)
    assert isinstance(a.x_train, LazyRows) and isinstance(a.x_val, LazyRows)
    assert a.split.startswith("seeded split of 1348") and len(a.x_val) == 337
    assert bool((a.x_val.index == b.x_val.index).all()) and not set(a.x_train.index.tolist()) & set(
        a.x_val.index.tolist()
    )
    assert tuple(a.x_train[torch.tensor([0, 5])].shape) == (2, 3, 8, 8)  # no input spec: RGB at the images' size


def test_size_channels_and_normalization_come_from_the_preprocessor_config(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(
        '{"size": {"height": 16, "width": 12}, "image_mean": [0.5], "image_std": [0.25], "do_normalize": true}'
    )
    settings = image_settings(DataSpec(channels=1), None, folder)
    assert settings.size == (16, 12) and settings.mean == (0.5,) and settings.std == (0.25,)
    assert image_settings(DataSpec(image_size=[4, 4], mean=[0.1], std=[0.2]), None, folder).size == (4, 4)


def test_resize_and_normalize(tmp_path: Path) -> None:
    root = tmp_path / "f"
    for split, shade in (("train", 255), ("val", 0)):
        (root / split / "a").mkdir(parents=True)
        Image.new("RGB", (20, 10), (shade, shade, shade)).save(root / split / "a" / "1.png")
    ds = load_dataset(zip_folder(root, tmp_path / "d.zip"), DataSpec(image_size=[4, 6], mean=[0.5], std=[0.5]))
    train, val = ds.x_train[slice(0, 1)], ds.x_val[slice(0, 1)]
    assert tuple(train.shape) == (1, 3, 4, 6) and torch.allclose(train, torch.ones_like(train))
    assert torch.allclose(val, -torch.ones_like(val))


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return path


def _png(value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"train/0/a.png": _png(), "train/0/notes.txt": b"hello"}, r"train/0/notes\.txt is not an image"),
        ({"train/0/a.png": _png(), "train/1/b.png": _png()[:60]}, r"image train/1/b\.png cannot be decoded"),
        (
            {"train/0/a.png": _png(), "val/0/b.png": _png(), "val/7/c.png": _png()},
            r"class folder val/7 has no train/7",
        ),
        ({"train/a.png": _png()}, r"train/a\.png is a file directly in train/"),
        ({"0/a.png": _png()}, r"no train/ folder"),
        ({"train/0/a.gif": b"GIF89a" + b"\x00" * 40}, r"train/0/a\.gif"),
    ],
)
def test_bad_members_are_named(tmp_path: Path, members: dict[str, bytes], message: str) -> None:
    with pytest.raises(InvalidDataError, match=message) as err:
        load_dataset(_zip(tmp_path / "d.zip", members), DataSpec())
    assert str(tmp_path) not in str(err.value) and "/tmp" not in str(err.value)


def test_a_traversal_name_is_refused(tmp_path: Path) -> None:
    data = _zip(tmp_path / "d.zip", {"train/0/a.png": _png(), "../../escape.png": _png()})
    with pytest.raises(InvalidDataError, match="climbs out of its folder"):
        load_dataset(data, DataSpec())
    assert not (tmp_path.parent / "escape.png").exists()


def test_more_classes_than_outputs_names_the_class_folder(torchscript_model: Path, tmp_path: Path) -> None:
    members = {f"train/{c}/a.png": _png(i * 10) for i, c in enumerate("abcdefghijk")}  # 11 classes, 10 outputs
    data = _zip(tmp_path / "d.zip", members | {f"val/{c}/b.png": _png() for c in "abcdefghijk"})
    with pytest.raises(InvalidDataError, match=r"11 classes but the model has 10 outputs \(class folder 'k'"):
        _run(_spec({"model": {"input_shape": [1, 8, 8]}}), torchscript_model, data, tmp_path / "out")
