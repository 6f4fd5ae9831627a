"""Dropped PostgreSQL connections mid-job: the worker reconnects and the job still succeeds."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.conftest import Stack
from tests.integration.test_service_e2e import _slow, _submit
from tests.service.support import PG_ADMIN, wait_for

pytestmark = pytest.mark.integration


def _terminate_backends(db_name: str, seconds: float) -> int:
    """Kill every connection to `db_name` (worker and API alike), again and again for `seconds`."""
    killed = 0
    deadline = time.monotonic() + seconds
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (db_name,),
            ).fetchall()
            killed += sum(1 for (ok,) in rows if ok)
            time.sleep(0.005)
    return killed


def _stage(stack: Stack, job_id: str) -> str | None:
    with stack.client() as c:
        stage: str | None = c.get(f"/v1/jobs/{job_id}").json()["stage"]
    return stage


def test_a_dropped_database_connection_does_not_fail_a_running_job(
    live_server: Stack, torchscript_model: Path, digits_npz: Path
) -> None:
    job = _submit(live_server, torchscript_model, digits_npz, _slow(10))
    live_server.wait(job["id"], timeout=120, until={"running"})
    wait_for(lambda: _stage(live_server, job["id"]) == "finetune", 120, "the finetune stage")
    db_name = live_server.env["PRUNEKIT_DATABASE_URL"].rsplit("/", 1)[-1]
    assert _terminate_backends(db_name, seconds=2.0) > 0
    done = live_server.wait(job["id"], timeout=240)
    assert done["status"] == "succeeded", done.get("error")
    assert done["attempts"] == 1  # the engine kept running: no lease was lost, nothing was rerun
