"""The `prunekit` client CLI against the real service (uvicorn + Celery worker + Redis), as CI would run it.

Needs the `live_server` fixture (tests/integration/conftest.py). What these tests use of it:
- `base_url` (str) and either `api_key` (str) or `api_keys` (dict name -> key, or list of keys);
- for the restart test, `stop_api()` and `start_api()` (same port), or `restart_api()`.
It may be an object with those attributes or a dict with those keys. Without the fixture the tests skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from prunekit.cli.exit_codes import ExitCode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST_SPEC: dict[str, Any] = {
    "model": {"format": "auto"},
    "pruning": {"method": "magnitude", "scope": "global", "sparsity": 0.5},
    "finetune": {"epochs": 1, "batch_size": 64},
    "evaluation": {"latency": {"repeats": 5, "warmup": 1}},
    "gates": {"min_sparsity": 0.45, "max_accuracy_drop": 0.5},
    "seed": 0,
}


@dataclass
class Live:
    base_url: str
    api_key: str
    handle: Any


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


@pytest.fixture()
def live(live_server: Any) -> Live:
    handle = live_server
    base_url = str(_field(handle, "base_url")).rstrip("/")
    key = _field(handle, "api_key")
    if not key:
        keys = _field(handle, "api_keys")
        key = next(iter(keys.values())) if isinstance(keys, dict) else next(iter(keys or []), None)
    assert key, "live_server provides no API key"
    return Live(base_url, str(key), handle)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from tests.support.digits import train_digits_cnn

    path = tmp_path_factory.mktemp("e2e") / "digits_cnn.pt"
    torch.jit.save(torch.jit.script(train_digits_cnn(epochs=4)), str(path))
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.digits import write_digits_npz

    return write_digits_npz(tmp_path_factory.mktemp("e2e-data") / "digits.npz")


def _spec(tmp_path: Path, **changes: Any) -> Path:
    spec = json.loads(json.dumps(FAST_SPEC))
    for key, value in changes.items():
        spec[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cli(live: Live, *args: str, key: str | None = None, timeout: float = 560) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRUNEKIT_SERVER": live.base_url, "PRUNEKIT_API_KEY": key or live.api_key}
    return subprocess.run(
        [sys.executable, "-m", "prunekit.cli.main", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_submit_wait_download_verify(live: Live, model_file: Path, data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    junit = tmp_path / "junit.xml"
    summary = tmp_path / "summary.md"
    spec = _spec(tmp_path)
    result = _cli(
        live,
        "submit",
        str(model_file),
        "--spec",
        str(spec),
        "--data",
        str(data_file),
        "--wait",
        "--out",
        str(out),
        "--junit",
        str(junit),
        "--summary",
        str(summary),
        "--json",
        "--poll-interval",
        "0.5",
        "--timeout",
        "500",
    )
    assert result.returncode == ExitCode.OK, result.stderr
    doc = json.loads(result.stdout)
    job = doc["job"]
    assert job["status"] == "succeeded" and job["gate_status"] == "passed"
    artifact = Path(doc["files"]["artifact"])
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == job["artifact"]["sha256"]
    assert artifact.stat().st_size == job["artifact"]["size"]
    report = json.loads((out / "report.json").read_text())
    assert report["sparsity"]["global_sparsity"] >= 0.45
    html = (out / "report.html").read_text()
    assert "<svg" in html and "https://" not in html
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "0" and len(list(root.iter("testcase"))) == len(job["gates"]) >= 2
    assert "| Validation accuracy |" in summary.read_text()

    # The other commands on the finished job.
    assert _cli(live, "status", job["id"]).returncode == 0
    listed = _cli(live, "list", "--json")
    assert job["id"] in [j["id"] for j in json.loads(listed.stdout)["items"]]
    again = _cli(live, "download", job["id"], "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip()).read_bytes() == artifact.read_bytes()
    md = _cli(live, "report", job["id"], "--format", "markdown")
    assert md.returncode == 0 and "| Train accuracy |" in md.stdout
    waited = _cli(live, "wait", job["id"])
    assert waited.returncode == ExitCode.OK


def test_impossible_gate_gives_gate_missed_and_junit_failure(
    live: Live, model_file: Path, data_file: Path, tmp_path: Path
) -> None:
    junit = tmp_path / "junit.xml"
    spec = _spec(tmp_path, gates={"min_sparsity": 0.45, "max_artifact_bytes": 1})
    result = _cli(
        live,
        "submit",
        str(model_file),
        "--spec",
        str(spec),
        "--data",
        str(data_file),
        "--wait",
        "--junit",
        str(junit),
        "--poll-interval",
        "0.5",
        "--timeout",
        "500",
    )
    assert result.returncode == ExitCode.GATE_MISSED, result.stderr
    root = ET.parse(junit).getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["max_artifact_bytes"].find("failure") is not None
    assert cases["min_sparsity"].find("failure") is None
    assert root.get("failures") == "1"


def test_wrong_api_key_gives_auth_exit_code(live: Live, model_file: Path, tmp_path: Path) -> None:
    result = _cli(live, "submit", str(model_file), "--spec", str(_spec(tmp_path)), "--wait", key="not-a-key")
    assert result.returncode == ExitCode.AUTH_ERROR, result.stderr
    assert _cli(live, "list", key="not-a-key").returncode == ExitCode.AUTH_ERROR


def test_invalid_spec_is_rejected_before_upload(live: Live, model_file: Path, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("pruning:\n  sparsity: 2\n")
    result = _cli(live, "submit", str(model_file), "--spec", str(spec))
    assert result.returncode == ExitCode.INVALID_INPUT
    assert "pruning" in result.stderr


def test_api_restart_during_wait_does_not_fail_the_client(
    live: Live, model_file: Path, data_file: Path, tmp_path: Path
) -> None:
    handle = live.handle
    stop, start, restart = (_field(handle, n) for n in ("stop_api", "start_api", "restart_api"))
    assert (callable(stop) and callable(start)) or callable(restart), "live_server cannot restart the API"
    # Even the fast job runs for several seconds (baseline, fine-tuning, evaluation, latency): the API goes away
    # a second after the submit, while the client is waiting.
    spec = _spec(tmp_path)
    env = {**os.environ, "PRUNEKIT_SERVER": live.base_url, "PRUNEKIT_API_KEY": live.api_key}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prunekit.cli.main",
            "submit",
            str(model_file),
            "--spec",
            str(spec),
            "--data",
            str(data_file),
            "--wait",
            "--poll-interval",
            "0.5",
            "--timeout",
            "500",
            "--max-outage",
            "120",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        submitted = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if line.startswith("submitted "):
                submitted = line
                break
        assert submitted, "the job was not submitted"
        time.sleep(1.0)  # let the client start waiting
        if callable(stop) and callable(start):
            stop()
            time.sleep(3.0)  # several polls fail while the API is down
            start()
        else:
            restart()
        stdout, rest = proc.communicate(timeout=540)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.OK, rest
    assert stdout.strip() == "succeeded"
    if callable(stop):
        assert "retrying" in rest  # the client saw the outage and rode it out
