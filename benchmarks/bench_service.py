"""Service benchmarks: submit-to-start latency (Redis and the embedded filesystem transport), status
endpoint requests per second, and the API's peak memory during a large streamed upload.

Run from the repository root with Redis and PostgreSQL up:
    .venv/bin/python benchmarks/bench_service.py --json var/bench_service.json
    .venv/bin/python benchmarks/bench_service.py --only status   # GET /v1/jobs/{id} vs GET /livez, PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import subprocess
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


LOADGEN = Path(__file__).resolve().parent / "http_load.py"


def _loadgen(port: int, path: str, seconds: float, clients: int, headers: dict[str, str]) -> dict[str, Any]:
    """Run benchmarks/http_load.py in its own process (so the client's CPU is not the API's event loop)."""
    cmd = [sys.executable, str(LOADGEN), "--port", str(port), "--path", path, "--seconds", str(seconds)]
    cmd += ["--clients", str(clients), *(a for k, v in headers.items() for a in ("--header", f"{k}: {v}"))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=seconds + 60)
    return dict(json.loads(out.stdout))


def loadgen_ceiling(tmp: Path, seconds: float, clients: int) -> dict[str, Any]:
    """The load generator against a trivial fixed-reply server: what it can drive at most on this machine."""
    port = free_port()
    server = ManagedProcess("trivial", [sys.executable, str(LOADGEN), "--serve", str(port)], base_env(), tmp).start()
    try:
        wait_for(lambda: _port_open(port), 30, "the trivial server")
        return _loadgen(port, "/", seconds, clients, {})
    finally:
        server.stop()


def _port_open(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    except httpx.HTTPError:
        return False


def start_production_api(env: dict[str, str], tmp: Path, port: int, workers: int) -> ManagedProcess:
    """The API as `python -m service.main` serves it (access log on, at INFO), with `workers` processes."""
    env = {**env, "PRUNEKIT_PORT": str(port), "WEB_CONCURRENCY": str(workers)}
    api = ManagedProcess("api-prod", [sys.executable, "-m", "service.main"], env, tmp).start()

    def up() -> bool:
        if not api.alive():
            raise RuntimeError(f"the API exited:\n{api.log_text()[-4000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, "the API to answer /livez")
    return api


class _Heartbeat:
    """Writes to the polled job every `interval` seconds from outside the API, as a running job's worker does (lease
    renewals, progress): each write's NOTIFY drops the job from the API's status cache."""

    def __init__(self, db_url: str, job_id: str, interval: float) -> None:
        import threading

        self.db_url, self.job_id, self.interval = db_url, job_id, interval
        self.writes, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Heartbeat:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        conninfo = make_url(self.db_url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while not self._stop.wait(self.interval):
                conn.execute("UPDATE jobs SET percent = %s WHERE id = %s", (self.writes % 100, self.job_id))
                self.writes += 1


def status_vs_livez(tmp: Path, key: str, args: argparse.Namespace, cache: bool) -> dict[str, Any]:
    """GET /v1/jobs/{id} on PostgreSQL against GET /livez of the same server: req/s, latency and their ratio."""
    headers = {"Authorization": f"Bearer {key}"}
    db_name, db_url = create_pg_database()
    env = base_env()
    env.update({
        "PRUNEKIT_DATABASE_URL": db_url, "PRUNEKIT_BROKER_URL": REDIS_URL,
        "PRUNEKIT_BROKER_KEY_PREFIX": f"bench-{secrets.token_hex(4)}:", "PRUNEKIT_STORAGE_DIR": str(tmp / "storage"),
        "PRUNEKIT_API_KEYS": f"bench:{key}", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "PRUNEKIT_STATUS_CACHE": str(cache).lower(),
    })  # fmt: skip
    port = free_port()
    api = start_production_api(env, tmp, port, args.api_workers)
    result: dict[str, Any] = {
        "status_cache": cache, "api_workers": args.api_workers, "clients": args.concurrency, "rounds": [],
        "job_write_interval_s": args.job_writes,
    }  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as c:
            model = c.post("/v1/files", files={"file": ("m.pt", b"x")}).json()["id"]
            job = c.post("/v1/jobs", json={"spec": json.loads(SPEC), "model_file_id": model}).json()["id"]
        _loadgen(port, f"/v1/jobs/{job}", 2, args.concurrency, headers)  # warm-up: pools, caches
        # Short windows in ABBA order: other load on a shared machine then falls on both endpoints alike.
        with _Heartbeat(db_url, job, args.job_writes) as heartbeat:
            for i in range(args.rounds):
                runs = {}
                for name in ("livez", "status") if i % 2 == 0 else ("status", "livez"):
                    path, hdrs = ("/livez", {}) if name == "livez" else (f"/v1/jobs/{job}", headers)
                    runs[name] = _loadgen(port, path, args.window, args.concurrency, hdrs)
                result["rounds"].append({**runs, "ratio": round(runs["status"]["rps"] / runs["livez"]["rps"], 3)})
        result["job_writes"] = heartbeat.writes
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as c:
            # the last write must show: a cache that missed notifications would still serve an older percent
            wait_for(lambda: c.get(f"/v1/jobs/{job}").json()["percent"] == (heartbeat.writes - 1) % 100, 5, "it")
    finally:
        api.stop()
        drop_pg_database(db_name)
    for name in ("livez", "status"):
        result[f"median_{name}_rps"] = statistics.median(r[name]["rps"] for r in result["rounds"])
        result[f"median_{name}_p50_ms"] = statistics.median(r[name]["p50_ms"] for r in result["rounds"])
        result[f"median_{name}_p99_ms"] = statistics.median(r[name]["p99_ms"] for r in result["rounds"])
    result["errors"] = sum(r[n]["errors"] for r in result["rounds"] for n in ("livez", "status"))
    result["median_ratio"] = statistics.median(r["ratio"] for r in result["rounds"])
    return result


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
    ap.add_argument("--only", choices=["all", "status"], default="all")
    ap.add_argument("--api-workers", type=int, default=2, help="uvicorn processes for the status benchmark")
    ap.add_argument("--rounds", type=int, default=8, help="status benchmark: rounds of one /livez + one status window")
    ap.add_argument("--window", type=float, default=2, help="status benchmark: seconds per window")
    ap.add_argument("--status-cache", choices=["on", "off", "both"], default="both", help="status benchmark: runs")
    ap.add_argument(
        "--job-writes", type=float, default=1.0, help="status benchmark: seconds between writes to the job (0: none)"
    )
    args = ap.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_avg_at_start": os.getloadavg(),
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    key = "bench-" + secrets.token_hex(6)
    headers = {"Authorization": f"Bearer {key}"}
    results["loadgen_ceiling"] = loadgen_ceiling(tmp, args.seconds, args.concurrency)
    for cache in (True, False) if args.status_cache == "both" else (args.status_cache == "on",):
        name = "status_vs_livez_postgresql" + ("" if cache else "_uncached")
        results[name] = status_vs_livez(tmp, key, args, cache)
    if args.only == "status":
        _report(results, args.json)
        return

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
    _report(results, args.json)


def _report(results: dict[str, Any], path: Path | None) -> None:
    results["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


if __name__ == "__main__":
    main()
