"""The embedded default: one command, SQLite, kombu's filesystem transport, local storage."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service.support import ManagedProcess, base_env, descendants, free_port, wait_for

pytestmark = pytest.mark.integration


def test_embedded_server_runs_a_job_in_its_worker_process(
    tmp_path: Path, torchscript_model: Path, digits_npz: Path
) -> None:
    port = free_port()
    env = base_env()
    env.update({"PRUNEKIT_ENGINE_ISOLATE": "false"})  # one job; the sandbox is covered by the Redis stack
    # Run from an empty directory: everything it needs goes under ./var.
    cmd = [sys.executable, "-m", "service.embedded", "--no-auth", "--port", str(port)]
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    proc = ManagedProcess("embedded", cmd, env, tmp_path, cwd=tmp_path).start()
    try:

        def up() -> bool:
            assert proc.alive(), proc.log_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 90, "the embedded server")
        assert "AUTHENTICATION IS DISABLED" in proc.log_text()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            spec = {
                "pruning": {"method": "magnitude", "sparsity": 0.5},
                "finetune": {"epochs": 1},
                "evaluation": {"latency": {"repeats": 3, "warmup": 0}},
            }
            r = c.post(
                "/v1/jobs",
                files={"model": ("m.pt", torchscript_model.read_bytes()), "data": ("d.npz", digits_npz.read_bytes())},
                data={"spec": json.dumps(spec)},
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            deadline = time.monotonic() + 180
            while (job := c.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed", "canceled"):
                assert time.monotonic() < deadline, proc.log_text()[-3000:]
                time.sleep(0.3)
            assert job["status"] == "succeeded", job
            assert c.get(job["links"]["artifact"]).content
        assert (tmp_path / "var" / "prunekit.db").is_file()
        assert (tmp_path / "var" / "broker" / "queue").is_dir()
        assert list((tmp_path / "var" / "storage" / "jobs").iterdir())
        # The job ran in the separate worker process, not in the API's.
        assert proc.proc is not None and descendants(proc.proc.pid)
        assert "prunekit.run_job" in proc.log_text() and "ready." in proc.log_text()
    finally:
        proc.stop()
