"""The client side (`pip install prunekit`) must not pull torch or the server stack."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = [
    "torch",
    "torchvision",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "celery",
    "redis",
    "boto3",
    "matplotlib",
    "numpy",
]


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_client_library_is_light() -> None:
    assert _loaded_after("import prunekit.client") == []


def test_client_cli_and_renderers_are_light() -> None:
    statement = (
        "import prunekit.cli.remote, prunekit.reporting, prunekit.reporting.markdown, prunekit.reporting.junit\n"
        "from prunekit.reporting.markdown import render_markdown\n"
        "from prunekit.reporting.samples import compress_report\n"
        "render_markdown(compress_report())"
    )
    assert _loaded_after(statement) == []


def test_whole_cli_imports_without_torch() -> None:
    assert _loaded_after("import prunekit.cli.main") == []
