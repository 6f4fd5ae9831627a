"""A 200 MiB upload through a real uvicorn process keeps the API's memory flat."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.support import base_env, free_port, start_api

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_large_upload_streams_with_flat_memory(tmp_path: Path) -> None:
    env = base_env()
    env.update(
        {
            "PRUNEKIT_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
            "PRUNEKIT_BROKER_DIR": str(tmp_path / "broker"),
            "PRUNEKIT_STORAGE_DIR": str(tmp_path / "storage"),
            "PRUNEKIT_AUTH_DISABLED": "true",
            "PRUNEKIT_MAX_UPLOAD_BYTES": str(300 * MIB),
        }
    )
    port = free_port()
    api = start_api(env, tmp_path, port)
    try:
        assert api.proc is not None
        pid = api.proc.pid
        base = f"http://127.0.0.1:{port}"
        httpx.get(f"{base}/readyz", timeout=10)  # warm up imports before the baseline
        before = _rss_kib(pid)
        peak = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_kib(pid))
                time.sleep(0.02)

        block = bytes(range(256)) * 4096  # 1 MiB
        digest = hashlib.sha256()

        def body() -> Iterator[bytes]:
            yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
            for _ in range(200):
                digest.update(block)
                yield block
            yield b"\r\n--B--\r\n"

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            r = httpx.post(
                f"{base}/v1/files",
                content=body(),
                headers={"Content-Type": "multipart/form-data; boundary=B"},
                timeout=300,
            )
        finally:
            stop.set()
            sampler.join()
        assert r.status_code == 201, r.text
        assert r.json()["size"] == 200 * MIB and r.json()["sha256"] == digest.hexdigest()
        growth_mib = (peak[0] - before) / 1024
        assert growth_mib < 32, f"API RSS grew by {growth_mib:.1f} MiB during a 200 MiB upload"
        assert (tmp_path / "storage" / "files" / r.json()["id"]).stat().st_size == 200 * MIB
    finally:
        api.stop()
