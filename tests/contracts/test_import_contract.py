"""The package import rules, enforced: each rule that only lived in prose is checked here (run by scripts/check.sh).

- the API (`service`) never loads torch, so it never loads a model;
- the engine (`worker.engine`) is a plain library: no FastAPI, Celery or SQLAlchemy;
- the spec (`prunekit.spec`) is torch-free and server-free (the client's own rules are in tests/client);
- `service` (FastAPI) and `worker` (Celery tasks) never import each other: both use the job store `jobstore`;
- `jobstore` imports neither of them, nor FastAPI, nor torch; the engine never imports `jobstore`.
(docs/design/architecture.md draws these rules.)
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_STACK = ("fastapi", "starlette", "celery", "sqlalchemy", "alembic", "redis", "boto3")

# Which top-level packages each package may never import (checked on the source, imports inside functions too).
FORBIDDEN = {
    "service": {"worker", "torch", "torchvision"},
    "worker": {"service", "fastapi", "starlette"},
    "jobstore": {"service", "worker", "fastapi", "starlette", "torch", "torchvision"},
    "worker/engine": {"service", "jobstore", *SERVER_STACK},
    "prunekit/spec": {"service", "worker", "jobstore", "torch", *SERVER_STACK},
    "prunekit/client": {"service", "worker", "jobstore", "torch", *SERVER_STACK},
    # The local CLI runs the engine in-process (`prunekit run`), never the server's parts.
    "prunekit/cli": {"service", "jobstore", *SERVER_STACK},
}
JOBSTORE_MODULES = (
    "jobstore.lifecycle, jobstore.queue, jobstore.broker, jobstore.views, jobstore.storage, jobstore.storage.s3, "
    "jobstore.webhooks.delivery, jobstore.repositories.files, jobstore.repositories.trials"
)


def _loaded_after(statement: str, candidates: tuple[str, ...]) -> list[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(m for m in {candidates!r} if m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=180, cwd=ROOT
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def crossings(package: str, other: str, root: Path = ROOT) -> set[str]:
    """Files of `package` that import `other` anywhere (top level or inside a function)."""
    return {
        str(path.relative_to(root))
        for path in sorted((root / package).rglob("*.py"))
        if other in _imported_packages(path)
    }


def test_the_api_never_loads_torch() -> None:
    statement = "from service.app import create_app\nfrom jobstore.settings import Settings\ncreate_app(Settings())"
    assert _loaded_after(statement, ("torch", "torchvision", "numpy.linalg._umath_linalg_torch")) == []


def test_the_engine_never_loads_the_server_stack() -> None:
    statement = "import worker.engine.api, worker.engine.pipeline, worker.engine.kinds, worker.engine.isolation"
    assert _loaded_after(statement, SERVER_STACK) == []


def test_the_spec_is_torch_free_and_server_free() -> None:
    assert _loaded_after("import prunekit.spec, prunekit.spec.report", ("torch", *SERVER_STACK)) == []


def test_the_job_store_loads_neither_torch_nor_fastapi() -> None:
    assert _loaded_after(f"import {JOBSTORE_MODULES}", ("torch", "fastapi", "starlette", "service", "worker")) == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_what_it_must_not(package: str) -> None:
    for other in sorted(FORBIDDEN[package]):
        assert crossings(package, other) == set(), f"{package} imports {other}"


def test_the_crossing_check_sees_a_deliberate_violation(tmp_path: Path) -> None:
    # The check must fail on a violation, including one hidden inside a function.
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "bad.py").write_text("def f():\n    from worker.engine import api\n")
    (tmp_path / "service" / "good.py").write_text("import json\n")
    assert crossings("service", "worker", tmp_path) == {"service/bad.py"}
