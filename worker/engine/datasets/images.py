"""Image folders: a `.zip` / `.tar(.gz)` of `train/<class>/<image>` (and optionally `val/<class>/<image>`).

The archive is extracted with the engine's safe extractor into the job's scratch folder; images (PNG or JPEG)
are checked when the data is read and decoded one by one when a batch needs them, resized to the spec's size,
scaled to [0, 1] and normalized. Class folder names, sorted, are the label indices.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunekit.spec import DataSpec
from prunekit.spec.job import InputSpec
from worker.engine.datasets.rows import LazyRows
from worker.engine.errors import EngineError, InvalidDataError, InvalidSpecError
from worker.engine.models.archives import ArchiveLimits, archive_kind, extract_archive

__all__ = ["ImageFolder", "ImageItems", "ImageSettings", "is_image_archive", "read_image_folder"]

_FORMATS = ("PNG", "JPEG")
_SPLITS = ("train", "val")
_SKIPPED = ("__MACOSX",)  # folders archivers add beside the content
# Far more members than a model archive: one file per image.
_LIMITS = ArchiveLimits(max_members=2_000_000, max_total_bytes=64 * 1024**3)
LAYOUT = "an image folder archive holds train/<class>/<image> (and optionally val/<class>/<image>), PNG or JPEG"


@dataclass(frozen=True)
class ImageSettings:
    """How every image becomes a tensor: [channels, height, width], scaled to [0, 1], then (x - mean) / std."""

    channels: int
    size: tuple[int, int] | None  # (height, width); None: the images' own size, which must then be one
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


@dataclass
class ImageFolder:
    """The images of both splits as lazy rows, with their labels and class names."""

    train: LazyRows
    y_train: torch.Tensor
    val: LazyRows | None
    y_val: torch.Tensor | None
    classes: list[str]
    notes: list[str]


def is_image_archive(path: Path) -> bool:
    """A tar archive, or a zip whose members are not all .npy arrays (an .npz is a zip of those)."""
    kind = archive_kind(path)
    if kind is None:
        return False
    if kind != "zip":
        return True
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError):
        return False  # the .npz reader says what is wrong with it
    return bool(names) and not all(n.endswith(".npy") for n in names)


class ImageItems:
    """One image file per item, decoded with Pillow when asked for."""

    def __init__(self, root: Path, members: list[str], settings: ImageSettings) -> None:
        self.root, self.members, self.settings = root, members, settings
        channels = settings.channels
        self._mean = _per_channel(settings.mean, channels, 0.0)
        self._std = _per_channel(settings.std, channels, 1.0)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        member = self.members[index]
        try:
            with Image.open(self.root / member) as stored:
                img = stored.convert("L" if self.settings.channels == 1 else "RGB")
                if self.settings.size is not None and img.size != self.settings.size[::-1]:
                    img = img.resize(self.settings.size[::-1], Image.Resampling.BILINEAR)
                pixels = np.asarray(img, dtype=np.float32) / 255.0
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InvalidDataError(f"image {member} cannot be decoded ({_short(exc)}): replace or remove it") from None
        tensor = torch.from_numpy(pixels)
        tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()
        return (tensor - self._mean) / self._std


def _per_channel(values: tuple[float, ...] | None, channels: int, default: float) -> torch.Tensor:
    if values is None:
        return torch.full((channels, 1, 1), default)
    if len(values) == 1:
        values = values * channels
    return torch.tensor(values, dtype=torch.float32).view(channels, 1, 1)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(" '/")[0].split(' "/')[0][:160]  # Pillow names the file by its path: ours is named instead


def _extract(path: Path) -> tuple[Path, Path]:
    """(content root, holder folder) of the extracted archive; refusals are the data's fault."""
    holder = Path(tempfile.mkdtemp(prefix="prunekit-data-"))
    try:
        extract_archive(path, holder / "x", _LIMITS)
    except EngineError as exc:
        shutil.rmtree(holder, ignore_errors=True)
        raise InvalidDataError(f"data archive: {exc.message}") from None
    # Not extract_archive's answer: it unwraps any single top folder, train/ itself included.
    return _content_root(holder / "x"), holder


def _visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in _SKIPPED]


def _content_root(folder: Path) -> Path:
    """The folder holding train/ (the archive may wrap it in one top folder)."""
    entries = _visible(folder)
    if not any(p.name in _SPLITS for p in entries) and len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def _members(root: Path, split: str) -> dict[str, list[str]]:
    """Class name -> member names (relative to the archive's content) of one split's images."""
    folder = root / split
    classes: dict[str, list[str]] = {}
    for entry in sorted(_visible(folder)):
        if not entry.is_dir():
            raise InvalidDataError(f"{split}/{entry.name} is a file directly in {split}/: {LAYOUT}")
        files = []
        for item in sorted(_visible(entry)):
            member = f"{split}/{entry.name}/{item.name}"
            if not item.is_file():
                raise InvalidDataError(f"{member} is a folder inside a class folder: {LAYOUT}")
            files.append(member)
        if not files:
            raise InvalidDataError(f"class folder {split}/{entry.name} has no images: add some or remove it")
        classes[entry.name] = files
    if not classes:
        raise InvalidDataError(f"{split}/ has no class folders: {LAYOUT}")
    return classes


def _check_image(root: Path, member: str) -> tuple[int, int]:
    """The image's (width, height); anything but a readable PNG or JPEG names the member and the fix."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(root / member) as img:
            kind, size = img.format, img.size
            img.verify()  # reads every chunk (PNG CRCs): a truncated or damaged file fails here, not mid-job
    except UnidentifiedImageError:
        raise InvalidDataError(f"{member} is not an image (PNG or JPEG): remove it from the archive") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidDataError(f"image {member} cannot be decoded ({_short(exc)}): replace or remove it") from None
    if kind not in _FORMATS:
        raise InvalidDataError(f"{member} is a {kind} image; only PNG and JPEG are read: convert it")
    return size


def _scan(root: Path) -> tuple[list[str], dict[str, dict[str, list[str]]]]:
    stray = sorted(p.name for p in _visible(root) if p.name not in _SPLITS)
    if not (root / "train").is_dir():
        raise InvalidDataError(f"the archive has no train/ folder: {LAYOUT}")
    if stray:
        raise InvalidDataError(f"unexpected {stray[0]!r} beside train/: {LAYOUT}")
    splits = {s: _members(root, s) for s in _SPLITS if (root / s).is_dir()}
    classes = sorted(splits["train"])
    only_val = sorted(set(splits.get("val", {})) - set(classes))
    if only_val:
        raise InvalidDataError(
            f"class folder val/{only_val[0]} has no train/{only_val[0]}: every validation class needs training images"
        )
    return classes, splits


def preprocessor(folder: Path | None) -> dict[str, Any]:
    """A Hugging Face checkpoint's preprocessor_config.json (image size, mean, std), or {}."""
    path = folder / "preprocessor_config.json" if folder is not None else None
    if path is None or not path.is_file() or path.stat().st_size > 1024 * 1024:
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return config if isinstance(config, dict) else {}


def _config_size(config: dict[str, Any]) -> tuple[int, int] | None:
    size = config.get("size") if config.get("do_resize", True) else None
    if isinstance(size, int):
        return size, size
    if isinstance(size, dict) and isinstance(size.get("height"), int) and isinstance(size.get("width"), int):
        return size["height"], size["width"]
    if isinstance(size, dict) and isinstance(size.get("shortest_edge"), int):
        return size["shortest_edge"], size["shortest_edge"]
    return None


def _config_stats(config: dict[str, Any], key: str) -> tuple[float, ...] | None:
    values = config.get(key) if config.get("do_normalize", True) else None
    if isinstance(values, (int, float)):
        return (float(values),)
    if isinstance(values, list) and values and all(isinstance(v, (int, float)) for v in values):
        return tuple(float(v) for v in values)
    return None


def image_settings(spec: DataSpec, inputs: Sequence[InputSpec] | None, checkpoint: Path | None) -> ImageSettings:
    """The spec's image fields, else the model's declared input shape, else the checkpoint's preprocessor."""
    config = preprocessor(checkpoint)
    shape = list(inputs[0].shape) if inputs else []
    declared = len(shape) == 3 and shape[0] in (1, 3)
    channels = spec.channels or (shape[0] if declared else 3)
    size = tuple(spec.image_size) if spec.image_size else (shape[1], shape[2]) if declared else _config_size(config)
    mean = tuple(spec.mean) if spec.mean is not None else _config_stats(config, "image_mean")
    std = tuple(spec.std) if spec.std is not None else _config_stats(config, "image_std")
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) not in (1, channels):
            raise InvalidSpecError(
                f"data.{name} has {len(values)} values for {channels}-channel images: give 1 or {channels}"
            )
    if (mean is None) != (std is None):
        mean, std = mean or (0.0,), std or (1.0,)
    return ImageSettings(channels, size, mean, std)  # type: ignore[arg-type]


def _labels(members: dict[str, list[str]], classes: list[str]) -> tuple[list[str], torch.Tensor]:
    files = [m for name in sorted(members) for m in members[name]]
    labels = [classes.index(name) for name in sorted(members) for _ in members[name]]
    return files, torch.tensor(labels, dtype=torch.int64)


def read_image_folder(
    path: Path, spec: DataSpec, inputs: Sequence[InputSpec] | None, checkpoint: Path | None
) -> ImageFolder:
    """Extract, check every member and return lazy rows of both splits (val None: to be split by the caller)."""
    root, holder = _extract(path)
    try:
        classes, splits = _scan(root)
        sizes = {_check_image(root, m) for members in splits.values() for ms in members.values() for m in ms}
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        raise
    settings = image_settings(spec, inputs, checkpoint)
    notes = []
    if settings.size is None:
        width, height = max(sizes)
        settings = ImageSettings(settings.channels, (height, width), settings.mean, settings.std)
        if len(sizes) > 1:
            notes.append(f"images of {len(sizes)} sizes were resized to {height}x{width} (set data.image_size)")
    sample = (settings.channels, *settings.size)  # type: ignore[misc]
    folder = _split_rows(root, splits, classes, settings, sample)
    weakref.finalize(folder.train.items, shutil.rmtree, holder, True)  # the files live as long as the rows
    folder.notes = [*notes, _summary(folder, settings)]
    return folder


def _split_rows(
    root: Path, splits: dict[str, dict[str, list[str]]], classes: list[str], settings: ImageSettings, sample: Any
) -> ImageFolder:
    train_files, y_train = _labels(splits["train"], classes)
    val_files, y_val = _labels(splits["val"], classes) if "val" in splits else ([], None)
    items = ImageItems(root, train_files + val_files, settings)
    n = len(train_files)
    train = LazyRows(items, torch.arange(n), sample, torch.float32)
    val = LazyRows(items, torch.arange(n, len(items)), sample, torch.float32) if val_files else None
    return ImageFolder(train, y_train, val, y_val, classes, [])


def _summary(folder: ImageFolder, settings: ImageSettings) -> str:
    height, width = settings.size or (0, 0)
    norm = f", normalized with mean {list(settings.mean)} and std {list(settings.std or ())}" if settings.mean else ""
    val = f" and {len(folder.val)} validation" if folder.val is not None else ""
    return (
        f"image folder: {len(folder.train)} training{val} images in {len(folder.classes)} classes, read as "
        f"{settings.channels}x{height}x{width} scaled to [0, 1]{norm}"
    )
