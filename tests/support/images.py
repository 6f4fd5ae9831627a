"""sklearn's digits rendered to PNG files in an image-folder layout, and read back without prunekit."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.digits import digits_arrays


def _write(folder: Path, x: np.ndarray, y: np.ndarray) -> None:
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img[0] * 255).astype(np.uint8), mode="L").save(target / f"{i:05d}.png")


def digit_folder(folder: Path, val: bool = True) -> Path:
    """train/<digit>/<n>.png (and val/<digit>/<n>.png) under `folder`, from digits_arrays' split."""
    arrays = digits_arrays()
    _write(folder / "train", arrays["x_train"], arrays["y_train"])
    if val:
        _write(folder / "val", arrays["x_val"], arrays["y_val"])
    return folder


def zip_folder(folder: Path, target: Path, top: str | None = "digits") -> Path:
    """Every file under `folder` into a zip, under one top folder `top` (or none)."""
    with zipfile.ZipFile(target, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                name = p.relative_to(folder).as_posix()
                zf.write(p, f"{top}/{name}" if top else name)
    return target


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x [N,1,H,W] float32 in [0,1], y) of one split, decoded with Pillow alone (classes in sorted order)."""
    classes = sorted(p.name for p in (folder / split).iterdir())
    xs, ys = [], []
    for label, name in enumerate(classes):
        for png in sorted((folder / split / name).iterdir()):
            xs.append(np.asarray(Image.open(png).convert("L"), dtype=np.float32)[None] / 255.0)
            ys.append(label)
    return np.stack(xs), np.array(ys, dtype=np.int64)
