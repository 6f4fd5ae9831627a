"""The sandbox: results and errors cross the process boundary; limits, scrubbing, network and cancel hold."""

from __future__ import annotations

import errno
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.engine.errors import EngineError, InvalidDataError, JobCanceledError, ResourceLimitError
from worker.engine.isolation import SandboxLimits, run_isolated

MiB = 1024 * 1024
LIMITS = SandboxLimits(memory_bytes=512 * MiB, cpu_seconds=60, file_size_bytes=64 * MiB, wall_seconds=120)
Emit = Callable[[dict[str, Any]], None]


def _target(fn: Callable[..., Any]) -> str:
    # The child imports this module the way the parent did (it gets the parent's sys.path).
    return f"{fn.__module__}:{fn.__name__}"


# --- targets (run in the child) -----------------------------------------------------------------------------------


def echo(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    for i in range(3):
        emit({"stage": "work", "i": i})
    print("libraries may print to stdout; that must not break the event stream")
    return {"echo": payload, "pid": os.getpid()}


def raise_invalid_data(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    raise InvalidDataError("labels out of range: 11 >= 10 classes")


def raise_bug(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    raise ValueError("an unexpected bug")


def allocate(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    block = bytearray(payload["bytes"])
    return {"allocated": len(block)}


def spin(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    x = 0
    while True:
        x += 1


def write_file(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    with open(payload["path"], "wb") as fh:
        for _ in range(payload["mib"]):
            fh.write(b"\0" * MiB)
    return {}


def environment(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    return {"env": dict(os.environ)}


def connect(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    with socket.socket() as sock:
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", payload["port"]))
        except OSError as exc:
            return {"errno": exc.errno}
    return {"errno": 0}


def ticker(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    if payload.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for i in range(10_000):
        emit({"i": i, "pid": os.getpid()})
        time.sleep(0.02)
    return {}


def abort(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    print("about to crash hard")
    os.abort()


# --- tests ---------------------------------------------------------------------------------------------------------


def test_result_and_events_round_trip() -> None:
    events: list[dict[str, Any]] = []
    result, isolation = run_isolated(_target(echo), {"a": [1, 2], "b": "x"}, LIMITS, events.append)
    assert result["echo"] == {"a": [1, 2], "b": "x"}
    assert result["pid"] != os.getpid()
    assert events == [{"stage": "work", "i": i} for i in range(3)]
    assert isolation.child_process
    assert isolation.rlimits["RLIMIT_CPU"] == 60
    assert isolation.rlimits["RLIMIT_FSIZE"] == 64 * MiB
    assert isolation.rlimits["RLIMIT_CORE"] == 0
    assert isolation.rlimits["RLIMIT_AS"] == isolation.rlimits["address_space_baseline"] + 512 * MiB


def test_engine_error_keeps_its_type_and_message() -> None:
    with pytest.raises(InvalidDataError, match=r"^labels out of range: 11 >= 10 classes$"):
        run_isolated(_target(raise_invalid_data), {}, LIMITS)


def test_other_exceptions_become_engine_errors_with_the_output_tail_in_the_log_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(EngineError) as info:
        run_isolated(_target(raise_bug), {}, LIMITS)
    assert type(info.value) is EngineError
    assert info.value.code == "engine_error"
    assert info.value.message == "internal error in the sandboxed job (ValueError); see the worker's log"
    assert "ValueError: an unexpected bug" in caplog.text and "Traceback" in caplog.text


def test_hard_crash_is_reported_with_the_output_tail_in_the_log_only(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(EngineError, match=r"crashed \(SIGABRT\); the details are in the worker's log$") as info:
        run_isolated(_target(abort), {}, LIMITS)
    assert type(info.value) is EngineError
    assert "about to crash hard" not in info.value.message
    assert "about to crash hard" in caplog.text


def test_memory_limit() -> None:
    # 1 GiB of zeroed pages is cheap without a limit (calloc maps lazily), so only RLIMIT_AS can stop it.
    limits = SandboxLimits(memory_bytes=256 * MiB, cpu_seconds=60, file_size_bytes=None)
    with pytest.raises(ResourceLimitError, match="exceeded the 256 MiB memory limit"):
        run_isolated(_target(allocate), {"bytes": 1024 * MiB}, limits)
    result, _ = run_isolated(_target(allocate), {"bytes": 64 * MiB}, limits)
    assert result["allocated"] == 64 * MiB


def test_memory_limit_not_applied_with_cuda() -> None:
    limits = SandboxLimits(memory_bytes=256 * MiB, cpu_seconds=60, file_size_bytes=None, uses_cuda=True)
    result, isolation = run_isolated(_target(allocate), {"bytes": 1024 * MiB}, limits)
    assert result["allocated"] == 1024 * MiB
    assert isolation.rlimits["RLIMIT_AS"] is None
    assert isolation.rlimits["memory_bytes"] == 256 * MiB


def test_cpu_limit() -> None:
    limits = SandboxLimits(memory_bytes=None, cpu_seconds=1, file_size_bytes=None, wall_seconds=60)
    started = time.monotonic()
    with pytest.raises(ResourceLimitError, match="exceeded the 1 s CPU-time limit"):
        run_isolated(_target(spin), {}, limits)
    assert time.monotonic() - started < 30


def test_file_size_limit(tmp_path: Path) -> None:
    limits = SandboxLimits(memory_bytes=None, cpu_seconds=60, file_size_bytes=2 * MiB)
    with pytest.raises(ResourceLimitError, match="larger than the 2 MiB file-size limit"):
        run_isolated(_target(write_file), {"path": str(tmp_path / "big"), "mib": 8}, limits, writable=(tmp_path,))
    assert (tmp_path / "big").stat().st_size <= 2 * MiB


def test_wall_clock_limit() -> None:
    limits = SandboxLimits(memory_bytes=None, cpu_seconds=60, file_size_bytes=None, wall_seconds=1.5)
    with pytest.raises(ResourceLimitError, match=r"1\.5 s wall-clock limit"):
        run_isolated(_target(ticker), {}, limits, grace_seconds=1)


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEKIT_SECRET", "hunter2")
    monkeypatch.setenv("MY_API_KEY", "abc")
    monkeypatch.setenv("HARMLESS_BUT_UNLISTED", "1")
    # even when someone allowlists them, secret-looking names are dropped
    limits = SandboxLimits(
        memory_bytes=None,
        cpu_seconds=60,
        file_size_bytes=None,
        env_allow=("PATH", "HOME", "PYTHONPATH", "PRUNEKIT_SECRET", "MY_API_KEY"),
    )
    result, isolation = run_isolated(_target(environment), {}, limits)
    env = result["env"]
    assert "PRUNEKIT_SECRET" not in env and "MY_API_KEY" not in env and "HARMLESS_BUT_UNLISTED" not in env
    assert "hunter2" not in "".join(env.values())
    assert env["PATH"] == os.environ["PATH"]
    assert "PRUNEKIT_SECRET" not in isolation.environment and "PATH" in isolation.environment


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        yield server.getsockname()[1]


def test_network_is_isolated(listening_port: int) -> None:
    namespace_only = SandboxLimits(memory_bytes=None, cpu_seconds=60, file_size_bytes=None, isolate_filesystem=False)
    result, isolation = run_isolated(_target(connect), {"port": listening_port}, namespace_only)
    if isolation.network == "isolated":
        assert result["errno"] == errno.ENETUNREACH
    else:  # where namespaces are unavailable the Isolation must say why
        assert isolation.network.startswith("not isolated: unshare")
        assert result["errno"] == 0
    off = SandboxLimits(memory_bytes=None, cpu_seconds=60, file_size_bytes=None, isolate_network=False)
    result, isolation = run_isolated(_target(connect), {"port": listening_port}, off)
    assert result["errno"] == 0  # proves the listener is reachable without the namespace
    assert isolation.network == "not isolated: disabled by configuration"


def test_landlock_denies_tcp_as_a_second_wall(listening_port: int) -> None:
    result, isolation = run_isolated(_target(connect), {"port": listening_port}, LIMITS)
    if "TCP" in isolation.filesystem:
        assert result["errno"] == errno.EACCES  # refused by Landlock before the namespace's ENETUNREACH
    else:
        assert result["errno"] in (errno.ENETUNREACH, 0)


@pytest.mark.parametrize("ignore_term", [False, True])
def test_cancel_from_on_event_kills_the_child(ignore_term: bool) -> None:
    seen: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        if event["i"] == 3:
            raise JobCanceledError("canceled by the user")

    started = time.monotonic()
    with pytest.raises(JobCanceledError, match="canceled by the user"):
        run_isolated(_target(ticker), {"ignore_term": ignore_term}, LIMITS, on_event, grace_seconds=0.5)
    assert time.monotonic() - started < 20
    pid = seen[0]["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert [e["i"] for e in seen] == [0, 1, 2, 3]


def torch_job(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    import torch  # already imported by `preload`, so its ~3 GiB of mapped libraries are not counted

    from worker.engine.models.builtin import DigitsCNN

    out = DigitsCNN()(torch.zeros(4, 1, 8, 8))
    emit({"shape": list(out.shape)})
    torch.ones(payload["huge"], dtype=torch.uint8)  # torch's allocator raises RuntimeError under RLIMIT_AS
    return {}


def test_torch_job_under_memory_limit() -> None:
    events: list[dict[str, Any]] = []
    limits = SandboxLimits(memory_bytes=512 * MiB, cpu_seconds=120, file_size_bytes=None)
    with pytest.raises(ResourceLimitError, match="exceeded the 512 MiB memory limit"):
        run_isolated(_target(torch_job), {"huge": 2048 * MiB}, limits, events.append, preload=("torch",))
    assert events == [{"shape": [4, 10]}]  # torch ran fine within the allowance before the big allocation
