"""Service benchmarks: submit-to-start latency (Redis and the embedded filesystem transport), status
endpoint requests per second, and the API's peak memory during a large streamed upload.

Run from the repository root with Redis and PostgreSQL up:
    .venv/bin/python benchmarks/bench_service.py --json var/bench_service.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.service.support import (
    REDIS_URL,
    ManagedProcess,
    base_env,
    create_pg_database,
    drop_pg_database,
    free_port,
    start_api,
    start_worker,
    wait_for,
)

SPEC = json.dumps({"pruning": {"method": "magnitude", "sparsity": 0.5}, "finetune": {"epochs": 0}})


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def start_latency(base_url: str, headers: dict[str, str], n: int) -> dict[str, float]:
    """Seconds from a job's creation to a worker claiming it (server timestamps), one job at a time.

    The model is not a model, so each job fails at once after it started: we time the queue, not the engine.
    """
    lat: list[float] = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as c:
        model = c.post("/v1/files", files={"file": ("m.pt", b"not a model")}).json()["id"]
        for _ in range(n):
            job = c.post("/v1/jobs", json={"spec": json.loads(SPEC), "model_file_id": model}).json()
            while (j := c.get(f"/v1/jobs/{job['id']}").json())["started_at"] is None:
                time.sleep(0.02)
            lat.append(_ts(j["started_at"]) - _ts(j["created_at"]))
            while c.get(f"/v1/jobs/{job['id']}").json()["status"] == "running":
                time.sleep(0.02)
    lat.sort()
    return {
        "jobs": n,
        "median_s": round(statistics.median(lat), 4),
        "p90_s": round(lat[int(0.9 * (n - 1))], 4),
        "max_s": round(lat[-1], 4),
    }


async def _status_load(
    base_url: str, headers: dict[str, str], job_id: str, seconds: float, conc: int
) -> dict[str, Any]:
    times: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30, limits=limits) as c:

        async def loop() -> None:
            nonlocal errors
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = await c.get(f"/v1/jobs/{job_id}")
                times.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        t0 = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(conc)))
        wall = time.monotonic() - t0
    times.sort()
    return {
        "concurrency": conc,
        "requests": len(times),
        "errors": errors,
        "rps": round(len(times) / wall, 1),
        "p50_ms": round(1000 * times[len(times) // 2], 2),
        "p99_ms": round(1000 * times[int(0.99 * (len(times) - 1))], 2),
    }


def status_rps(base_url: str, headers: dict[str, str], seconds: float, conc: int) -> dict[str, Any]:
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as c:
        model = c.post("/v1/files", files={"file": ("m.pt", b"x")}).json()["id"]
        job = c.post("/v1/jobs", json={"spec": json.loads(SPEC), "model_file_id": model}).json()
    return asyncio.run(_status_load(base_url, headers, job["id"], seconds, conc))


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def upload_memory(base_url: str, headers: dict[str, str], pid: int, size_mb: int) -> dict[str, Any]:
    """Stream size_mb through POST /v1/files (chunked) and record the API process's RSS."""
    chunk = os.urandom(1024 * 1024)
    before = _rss_kib(pid, "VmRSS")
    peak = [before]
    done = [False]

    def body() -> Any:
        yield b'--BENCH\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        for _ in range(size_mb):
            yield chunk
        yield b"\r\n--BENCH--\r\n"

    def sampler() -> None:
        while not done[0]:
            peak[0] = max(peak[0], _rss_kib(pid, "VmRSS"))
            time.sleep(0.05)

    import threading

    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    t0 = time.monotonic()
    with httpx.Client(base_url=base_url, headers=headers, timeout=600) as c:
        r = c.post("/v1/files", content=body(), headers={"Content-Type": "multipart/form-data; boundary=BENCH"})
    wall = time.monotonic() - t0
    done[0] = True
    t.join()
    assert r.status_code == 201, r.text
    return {
        "upload_mb": size_mb,
        "seconds": round(wall, 2),
        "mb_per_s": round(size_mb / wall, 1),
        "rss_before_mib": round(before / 1024, 1),
        "rss_peak_mib": round(peak[0] / 1024, 1),
        "rss_growth_mib": round((peak[0] - before) / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--upload-mb", type=int, default=256)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_avg_at_start": os.getloadavg(),
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    key = "bench-" + secrets.token_hex(6)
    headers = {"Authorization": f"Bearer {key}"}

    # 1. Distributed: Redis + PostgreSQL + local storage, one API process and one worker.
    db_name, db_url = create_pg_database()
    env = base_env()
    env.update({
        "PRUNEKIT_DATABASE_URL": db_url, "PRUNEKIT_BROKER_URL": REDIS_URL,
        "PRUNEKIT_BROKER_KEY_PREFIX": f"bench-{secrets.token_hex(4)}:", "PRUNEKIT_STORAGE_DIR": str(tmp / "storage"),
        "PRUNEKIT_API_KEYS": f"bench:{key}", "PRUNEKIT_ENGINE_ISOLATE": "false",
        "PRUNEKIT_MAX_UPLOAD_BYTES": str(2 * 1024**3), "PRUNEKIT_WORK_DIR": str(tmp / "work"),
    })  # fmt: skip
    port = free_port()
    api = start_api(env, tmp, port)
    worker = start_worker(env, tmp, "bench-worker", queues="cpu,gpu")
    base = f"http://127.0.0.1:{port}"
    try:
        start_latency(base, headers, 2)  # warm-up: the pool process imports the engine on its first job
        results["start_latency_redis"] = start_latency(base, headers, args.jobs)
        results["status_rps_postgresql"] = status_rps(base, headers, args.seconds, args.concurrency)
        assert api.proc is not None
        results["upload_memory_local_storage"] = upload_memory(base, headers, api.proc.pid, args.upload_mb)
    finally:
        worker.stop()
        api.stop()
        drop_pg_database(db_name)

    # 2. Embedded: one command, SQLite, filesystem transport.
    emb_dir = tmp / "embedded"
    emb_dir.mkdir()
    eport = free_port()
    eenv = base_env()
    eenv.update({"PRUNEKIT_API_KEYS": f"bench:{key}", "PRUNEKIT_ENGINE_ISOLATE": "false",
                 "PYTHONPATH": str(Path(__file__).resolve().parents[1])})  # fmt: skip
    emb = ManagedProcess(
        "embedded", [sys.executable, "-m", "service.embedded", "--port", str(eport)], eenv, tmp, cwd=emb_dir
    ).start()
    ebase = f"http://127.0.0.1:{eport}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{ebase}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 90, "the embedded server")
        start_latency(ebase, headers, 2)
        results["start_latency_embedded_filesystem"] = start_latency(ebase, headers, args.jobs)
        results["status_rps_sqlite"] = status_rps(ebase, headers, args.seconds, args.concurrency)
    finally:
        emb.stop()
    results["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)


if __name__ == "__main__":
    main()
