"""The package import rules, enforced: each rule that only lived in prose is checked here (run by scripts/check.sh).

- the API (`service`) never loads torch, so it never loads a model;
- the engine (`worker.engine`) is a plain library: no FastAPI, Celery or SQLAlchemy;
- the spec (`prunekit.spec`) is torch-free and server-free (the client's own rules are in tests/client);
- `service` and `worker` do not import each other. Today's crossings are listed below and may only shrink: a new
  one fails, and so does a listed one that is gone (remove it from the list, so it cannot come back).
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

# Known crossings between service/ and worker/ (issue 9 removes them with a shared job store).
KNOWN_CROSSINGS = {
    "service": {"service/core/broker.py", "service/ops/metrics.py"},
    "worker": {
        "worker/celery_app.py", "worker/leftovers.py", "worker/main.py", "worker/runner.py", "worker/sweeper.py",
        "worker/sweeps.py", "worker/tasks.py",
    },
}  # fmt: skip


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
    statement = "from service.app import create_app\nfrom service.core.config import Settings\ncreate_app(Settings())"
    assert _loaded_after(statement, ("torch", "torchvision", "numpy.linalg._umath_linalg_torch")) == []


def test_the_engine_never_loads_the_server_stack() -> None:
    statement = "import worker.engine.api, worker.engine.pipeline, worker.engine.kinds, worker.engine.isolation"
    assert _loaded_after(statement, SERVER_STACK) == []


def test_the_spec_is_torch_free_and_server_free() -> None:
    assert _loaded_after("import prunekit.spec, prunekit.spec.report", ("torch", *SERVER_STACK)) == []


@pytest.mark.parametrize(("package", "other"), [("service", "worker"), ("worker", "service")])
def test_service_and_worker_crossings_only_shrink(package: str, other: str) -> None:
    found = crossings(package, other)
    assert found - KNOWN_CROSSINGS[package] == set(), f"new imports of {other} from {package}"
    assert KNOWN_CROSSINGS[package] - found == set(), "a crossing is gone: remove it from KNOWN_CROSSINGS"


def test_the_crossing_check_sees_a_deliberate_violation(tmp_path: Path) -> None:
    # The check must fail on a violation, including one hidden inside a function.
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "bad.py").write_text("def f():\n    from worker.engine import api\n")
    (tmp_path / "service" / "good.py").write_text("import json\n")
    assert crossings("service", "worker", tmp_path) == {"service/bad.py"}
