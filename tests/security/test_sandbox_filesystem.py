"""The sandboxed child sees only libraries, its inputs and its own folders (Landlock), whatever code it runs."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.engine.isolation import SandboxLimits, run_isolated
from worker.engine.landlock import abi_version

MiB = 1024 * 1024
LIMITS = SandboxLimits(memory_bytes=512 * MiB, cpu_seconds=60, file_size_bytes=64 * MiB, wall_seconds=120)
Emit = Callable[[dict[str, Any]], None]
REPO = Path(__file__).resolve().parents[2]


def test_this_kernel_has_landlock() -> None:
    # CI's machines do: a kernel without it would leave the sandbox with rlimits and a network namespace only.
    assert abi_version() >= 1


def _target(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__name__}"


def _errno_of(action: Callable[[], object]) -> int:
    try:
        action()
    except OSError as exc:
        return exc.errno or -1
    return 0


def probe(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Try each attack the payload names; return the errno each one got (0 = it worked)."""
    results: dict[str, int] = {}
    for name in payload.get("read", []):
        results[f"read {name}"] = _errno_of(lambda n=name: Path(n).read_bytes())
    for name in payload.get("list", []):
        results[f"list {name}"] = _errno_of(lambda n=name: os.listdir(n))
    for name in payload.get("write", []):
        results[f"write {name}"] = _errno_of(lambda n=name: Path(n).write_bytes(b"pwned"))
    if "signal" in payload:
        results["signal"] = _errno_of(lambda: os.kill(payload["signal"], 0))
    return {"errno": results}


def _run(payload: dict[str, Any], **kwargs: Any) -> tuple[dict[str, int], str]:
    result, isolation = run_isolated(_target(probe), payload, LIMITS, **kwargs)
    return result["errno"], isolation.filesystem


def test_files_outside_the_job_cannot_be_read(tmp_path: Path) -> None:
    secret = tmp_path / "other-tenant" / "upload.pt"
    secret.parent.mkdir()
    secret.write_bytes(b"another tenant's model")
    mine = tmp_path / "job" / "model.pt"
    mine.parent.mkdir()
    mine.write_bytes(b"my model")
    outcome, filesystem = _run(
        {"read": [str(secret), "/etc/passwd", "/etc/hostname", str(REPO / "pyproject.toml"), str(mine)]},
        readable=(mine,),
    )
    assert filesystem.startswith("isolated: Landlock")
    assert outcome[f"read {secret}"] == errno.EACCES
    assert outcome["read /etc/passwd"] == errno.EACCES
    assert outcome["read /etc/hostname"] == errno.EACCES
    assert outcome[f"read {REPO / 'pyproject.toml'}"] == errno.EACCES  # the checkout: settings, data, secrets
    assert outcome[f"read {mine}"] == 0


def test_writes_only_inside_the_jobs_own_folder(tmp_path: Path) -> None:
    out = tmp_path / "job" / "out"
    out.mkdir(parents=True)
    neighbour = tmp_path / "other-job" / "out"
    neighbour.mkdir(parents=True)
    (neighbour / "model.pt").write_bytes(b"their artifact")
    targets = [str(out / "model.pt"), str(neighbour / "model.pt"), str(neighbour / "new.pt"), "/tmp/prunekit-marker"]
    outcome, _ = _run({"write": targets, "list": [str(tmp_path), "/tmp"]}, writable=(out,))
    assert outcome[f"write {out / 'model.pt'}"] == 0
    assert outcome[f"write {neighbour / 'model.pt'}"] == errno.EACCES
    assert outcome[f"write {neighbour / 'new.pt'}"] == errno.EACCES
    assert outcome["write /tmp/prunekit-marker"] == errno.EACCES
    assert outcome[f"list {tmp_path}"] == errno.EACCES and outcome["list /tmp"] == errno.EACCES
    assert (neighbour / "model.pt").read_bytes() == b"their artifact"
    assert not (neighbour / "new.pt").exists() and not Path("/tmp/prunekit-marker").exists()


def test_other_processes_cannot_be_read_or_signalled() -> None:
    parent = os.getpid()
    outcome, filesystem = _run({"read": [f"/proc/{parent}/environ", f"/proc/{parent}/cmdline"], "signal": parent})
    assert outcome[f"read /proc/{parent}/environ"] == errno.EACCES  # the worker's settings and secrets
    assert outcome[f"read /proc/{parent}/cmdline"] == errno.EACCES
    if "signals" in filesystem:  # Landlock ABI 6+: the worker cannot be killed from inside the sandbox
        assert outcome["signal"] == errno.EPERM


def test_confinement_can_be_switched_off_and_says_so(tmp_path: Path) -> None:
    limits = SandboxLimits(memory_bytes=None, cpu_seconds=60, file_size_bytes=None, isolate_filesystem=False)
    result, isolation = run_isolated(_target(probe), {"read": ["/etc/hostname"]}, limits)
    assert isolation.filesystem == "not isolated: disabled by configuration"
    assert result["errno"]["read /etc/hostname"] == 0
