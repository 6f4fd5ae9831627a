"""TorchScript uploads whose load reads or writes files: refused by the scanner, and contained if one slips past."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from prunekit.cli.exit_codes import ExitCode
from prunekit.cli.main import app
from tests.security.attacks import PACKAGINGS, evil_torchscript
from worker.engine.errors import EngineError, UnsafeModelError
from worker.engine.isolation import SandboxLimits, run_isolated
from worker.engine.models.torchscript import check_torchscript_archive

MiB = 1024 * 1024
SECRET = b"S3CRET-of-another-tenant"


@pytest.fixture
def victim(tmp_path: Path) -> dict[str, Path]:
    """Another tenant's upload and artifact next to this job's folder, and this job's own folders."""
    other = tmp_path / "other-job"
    other.mkdir()
    (other / "upload.pt").write_bytes(SECRET)
    (other / "model.pt").write_bytes(b"their artifact")
    job = tmp_path / "job"
    (job / "out").mkdir(parents=True)
    return {"secret": other / "upload.pt", "artifact": other / "model.pt", "job": job, "out": job / "out"}


@pytest.mark.parametrize("packaging", PACKAGINGS)
def test_the_scanner_refuses_every_packaging(victim: dict[str, Path], packaging: str) -> None:
    model = evil_torchscript(victim["job"], str(victim["secret"]), str(victim["artifact"]), packaging)
    with pytest.raises(UnsafeModelError, match=r"^refused: ") as info:
        check_torchscript_archive(model)
    assert "nothing was run" in info.value.message


@pytest.mark.parametrize("packaging", PACKAGINGS)
def test_prunekit_compress_refuses_it_and_nothing_leaks(victim: dict[str, Path], packaging: str) -> None:
    model = evil_torchscript(victim["job"], str(victim["secret"]), str(victim["artifact"]), packaging)
    spec = victim["job"] / "spec.yaml"
    spec.write_text("model: {input_shape: [1, 8, 8]}\n")
    result = CliRunner().invoke(app, ["compress", str(model), "-s", str(spec), "-o", str(victim["out"])])
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert "unsafe_model" in result.output
    assert victim["artifact"].read_bytes() == b"their artifact"
    assert SECRET.decode() not in result.output and str(victim["job"].parent) not in result.output


def raw_load(payload: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """A loader with no scanner at all: what happens when an attack gets past every check we have."""
    module = torch.jit.load(payload["model"])
    return {"w": float(module.w.sum())}


LIMITS = SandboxLimits(memory_bytes=1024 * MiB, cpu_seconds=120, file_size_bytes=64 * MiB, wall_seconds=180)


def _run_raw_load(model: Path, out: Path, limits: SandboxLimits = LIMITS) -> dict[str, Any]:
    result, _ = run_isolated(
        f"{raw_load.__module__}:raw_load", {"model": str(model)}, limits, preload=("torch",),
        readable=(model,), writable=(out,),
    )  # fmt: skip
    return result


def _raw_load(model: Path, out: Path) -> str:
    """The error message the attack ended with, or '' when the load went through (its writes failed silently)."""
    try:
        _run_raw_load(model, out)
    except EngineError as exc:
        return exc.message
    return ""


def test_without_confinement_the_attack_works(victim: dict[str, Path]) -> None:
    # The control: proves the archives really attack, so the containment tests below can fail.
    planted = victim["artifact"].with_name("planted.pt")
    model = evil_torchscript(victim["job"], str(victim["secret"]), str(planted), "upper_case_code")
    off = SandboxLimits(memory_bytes=None, cpu_seconds=120, file_size_bytes=None, isolate_filesystem=False)
    assert _run_raw_load(model, victim["out"], off)["w"] == SECRET[0]
    assert planted.exists()


def test_the_sandbox_contains_a_read_of_another_tenants_file(victim: dict[str, Path]) -> None:
    model = evil_torchscript(victim["job"], str(victim["secret"]), str(victim["out"] / "copy.pt"), "upper_case_code")
    error = _raw_load(model, victim["out"])
    assert error.startswith("internal error in the sandboxed job")
    assert SECRET.decode() not in error and str(victim["job"]) not in error
    assert not (victim["out"] / "copy.pt").exists()  # from_file was refused before the copy could be written


@pytest.mark.parametrize("target", ["artifact", "next_to_artifact", "tmp"])
def test_the_sandbox_contains_a_write_outside_the_job(victim: dict[str, Path], target: str) -> None:
    path = {
        "artifact": victim["artifact"],
        "next_to_artifact": victim["artifact"].with_name("planted.pt"),
        "tmp": Path("/tmp/prunekit-attack-marker"),
    }[target]
    # The read is of the upload itself, which the job may read, so the write is what the sandbox has to stop.
    model = evil_torchscript(victim["job"], str(victim["job"] / "decoys.pt"), str(path), "root_decoys")
    error = _raw_load(model, victim["out"])  # aten::save ignores a failed open: the load may even succeed
    assert str(victim["job"]) not in error and "Traceback" not in error
    assert victim["artifact"].read_bytes() == b"their artifact"
    assert not victim["artifact"].with_name("planted.pt").exists() and not Path("/tmp/prunekit-attack-marker").exists()
