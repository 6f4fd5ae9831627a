"""Archives that inflate far beyond their size are refused from the zip directory, before anything is inflated."""

from __future__ import annotations

import resource
import time
import zipfile
from pathlib import Path

import pytest
import torch

from worker.engine.errors import EngineError, UnsafeModelError
from worker.engine.models.formats import detect_format
from worker.engine.models.torchscript import check_torchscript_archive

MiB = 1024 * 1024
BOMB_BYTES = 768 * MiB  # inflates ~1000x; the reported attacks went to 6 and 12 GiB the same way


def _deflated_zeros(zf: zipfile.ZipFile, name: str, size: int) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as fh:
        block = bytes(16 * MiB)
        for _ in range(size // len(block)):
            fh.write(block)


def _bomb(path: Path, entry: str, base: Path) -> Path:
    """`base` (a real torch archive) with one extra deflated entry of zeros named `entry`."""
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        top = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            zout.writestr(info, zin.read(info), compress_type=zipfile.ZIP_STORED)
        _deflated_zeros(zout, f"{top}/{entry}", BOMB_BYTES)
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    torch.save({"w": torch.zeros(4)}, folder / "state.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(folder / "script.pt"))
    return {
        "state_dict_tensor": _bomb(folder / "bomb.pt", "data/99", folder / "state.pt"),
        "torchscript_code": _bomb(folder / "code_bomb.pt", "code/__torch__/bomb.py", folder / "script.pt"),
    }


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize("kind", ["state_dict_tensor", "torchscript_code"])
def test_a_zip_bomb_is_refused_fast_with_memory_flat(bombs: dict[str, Path], kind: str) -> None:
    path = bombs[kind]
    assert path.stat().st_size < 2 * MiB  # ~1000x: the attack is real
    before, started = _peak_rss(), time.monotonic()
    with pytest.raises(EngineError, match=r"refused: the archive entry .* would expand"):
        detect_format(path)
    assert time.monotonic() - started < 1.0
    assert _peak_rss() - before < 64 * MiB


def test_the_torchscript_scanner_never_inflates_a_huge_code_entry(bombs: dict[str, Path]) -> None:
    before = _peak_rss()
    with pytest.raises(UnsafeModelError, match=r"declares .* bytes, more than any model.s code"):
        check_torchscript_archive(bombs["torchscript_code"])
    assert _peak_rss() - before < 64 * MiB


def test_the_sandbox_memory_cap_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobstore.settings import Settings
    from worker.engine.api import default_limits

    monkeypatch.setenv("PRUNEKIT_SANDBOX_MEMORY_BYTES", str(512 * MiB))
    settings = Settings()
    assert default_limits("cpu", settings.sandbox_memory_bytes).memory_bytes == 512 * MiB
    assert Settings.model_fields["sandbox_memory_bytes"].default == 8 * 1024 * MiB
