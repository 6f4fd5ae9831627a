"""The real distributed stack for integration tests: uvicorn + Celery worker processes on Redis,
PostgreSQL and S3 (moto's server), all started here and torn down at the end of the session.

`live_server` is also what tests/integration/test_client_e2e.py drives the client CLI against.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis

from tests.service.support import (
    REDIS_URL,
    ManagedProcess,
    MotoS3,
    base_env,
    create_pg_database,
    drop_pg_database,
    free_port,
    start_api,
    start_worker,
)

WEBHOOK_SECRET = "whsec_" + "c2VydmljZS10ZXN0cy13ZWJob29rLXNlY3JldA=="
TERMINAL = {"succeeded", "failed", "canceled"}


@dataclass
class Stack:
    """Handles on the running service; tests may stop, kill and restart its processes."""

    env: dict[str, str]
    log_dir: Path
    port: int
    api_keys: dict[str, str]
    bucket: str
    s3_endpoint: str
    api: ManagedProcess | None = None
    workers: list[ManagedProcess] = field(default_factory=list)
    webhook_secrets: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_key(self) -> str:
        return self.api_keys["alice"]

    def client(self, who: str = "alice", timeout: float = 60) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.api_keys[who]}"}, timeout=timeout
        )

    def webhook_secret(self, who: str = "alice") -> str:
        """The key's webhook secret: rotated once per session through the API (it is shown only then)."""
        if who not in self.webhook_secrets:
            with self.client(who) as c:
                r = c.post("/v1/webhook-secret/rotate")
            assert r.status_code == 201, r.text
            self.webhook_secrets[who] = r.json()["secret"]
        return self.webhook_secrets[who]

    def start_api(self) -> None:
        self.api = start_api(self.env, self.log_dir, self.port)

    def stop_api(self) -> None:
        if self.api is not None:
            self.api.stop()

    def restart_api(self) -> None:
        self.stop_api()
        self.start_api()

    def start_worker(self, concurrency: int = 1, **env: str) -> ManagedProcess:
        w = start_worker({**self.env, **env}, self.log_dir, f"worker{len(self.workers)}", concurrency=concurrency)
        self.workers.append(w)
        return w

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()

    def storage_keys(self, prefix: str) -> list[str]:
        s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        resp = s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in resp.get("Contents", []))

    def wait(self, job_id: str, timeout: float, who: str = "alice", until: set[str] | None = None) -> dict[str, Any]:
        """Poll a job until it reaches one of `until` (default: any terminal state)."""
        until = until or TERMINAL
        deadline = time.monotonic() + timeout
        with self.client(who) as c:
            while True:
                job: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in until:
                    return job
                if job["status"] in TERMINAL or time.monotonic() > deadline:
                    logs = "\n".join(w.log_text()[-3000:] for w in self.workers)
                    raise AssertionError(f"job {job_id} is {job['status']}, wanted {until}: {job}\n{logs}")
                time.sleep(0.25)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("stack")
    moto = MotoS3(log_dir)
    db_name, db_url = create_pg_database()
    bucket = f"prunekit-{secrets.token_hex(4)}"
    boto3.client(
        "s3",
        endpoint_url=moto.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    keys = {"alice": "ka-" + secrets.token_hex(8), "bob": "kb-" + secrets.token_hex(8)}
    env = base_env()
    env.update(
        {
            "PRUNEKIT_DATABASE_URL": db_url,
            "PRUNEKIT_BROKER_URL": REDIS_URL,
            # Other test sessions may share this Redis: every key of this one carries its own prefix.
            "PRUNEKIT_BROKER_KEY_PREFIX": f"pktest-{secrets.token_hex(4)}:",
            "PRUNEKIT_STORAGE_BACKEND": "s3",
            "PRUNEKIT_S3_BUCKET": bucket,
            "PRUNEKIT_S3_ENDPOINT_URL": moto.endpoint,
            "PRUNEKIT_S3_REGION": "us-east-1",
            "PRUNEKIT_API_KEYS": ",".join(f"{k}:{v}" for k, v in keys.items()),
            "PRUNEKIT_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024),
            # test_fifty_concurrent_submissions holds 50 jobs of one key at once (the default quota is 20;
            # quotas themselves are tested in tests/service/test_quotas.py)
            "PRUNEKIT_MAX_ACTIVE_JOBS_PER_KEY": "100",
            "PRUNEKIT_LEASE_SECONDS": "5",
            "PRUNEKIT_HEARTBEAT_SECONDS": "0.5",
            "PRUNEKIT_SWEEP_INTERVAL": "1",
            "PRUNEKIT_MAX_ATTEMPTS": "3",
            "PRUNEKIT_PROGRESS_INTERVAL": "0.3",
            "PRUNEKIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PRUNEKIT_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "PRUNEKIT_WEBHOOK_BACKOFF_SECONDS": "0.5",
            "PRUNEKIT_WORK_DIR": str(log_dir / "work"),
        }
    )
    stack = Stack(env, log_dir, free_port(), keys, bucket, moto.endpoint)
    try:
        stack.start_api()
        stack.start_worker()
        yield stack
    finally:
        stack.stop_workers()
        stack.stop_api()
        moto.stop()
        drop_pg_database(db_name)
        _delete_redis_keys(env["PRUNEKIT_BROKER_KEY_PREFIX"])


def _delete_redis_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class _Hooks(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def webhook_sink() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP server on 127.0.0.1 collecting webhook deliveries."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    server.received = []  # type: ignore[attr-defined]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/prunekit", server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()
