"""The security suite's attacks through the real service (uvicorn, Celery worker, PostgreSQL, Redis, S3).

The attack archives live in tests/security/attacks.py; the sandbox-level containment tests in tests/security/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import Stack
from tests.security.attacks import PACKAGINGS, evil_torchscript

pytestmark = pytest.mark.integration

SPEC = {"model": {"input_shape": [1, 8, 8]}, "pruning": {"sparsity": 0.5}, "seed": 0}


@pytest.mark.parametrize("packaging", PACKAGINGS)
def test_a_torchscript_that_reads_and_writes_files_is_refused_and_leaks_nothing(
    live_server: Stack, tmp_path: Path, packaging: str
) -> None:
    planted = live_server.log_dir / "work" / f"planted-{packaging}.pt"  # next to other jobs' folders
    model = evil_torchscript(tmp_path, "/etc/passwd", str(planted), packaging)
    with live_server.client() as c:
        r = c.post("/v1/jobs", files={"model": ("model.pt", model.read_bytes())}, data={"spec": json.dumps(SPEC)})
    assert r.status_code == 202, r.text
    done = live_server.wait(r.json()["id"], timeout=120)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "unsafe_model", done["error"]
    message = done["error"]["message"]
    assert message.startswith("refused: ") and "nothing was run" in message
    for leak in ("root:", str(live_server.log_dir), "/tmp/", "Traceback", "lease"):
        assert leak not in message
    assert not planted.exists()
