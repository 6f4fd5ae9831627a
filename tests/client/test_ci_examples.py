"""The example CI pipelines in docs/ci parse and only use commands and options the CLI has."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from prunekit.cli.main import app

CI_DIR = Path(__file__).resolve().parents[2] / "docs" / "ci"


SHELL_KEYS = {"run", "script", "before_script", "after_script"}


def _strings(node: Any, shell: bool = False) -> list[str]:
    """Shell command strings: values under run (GitHub) and *script (GitLab) keys."""
    if isinstance(node, str):
        return [node] if shell else []
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(v, shell or k in SHELL_KEYS)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v, shell)]
    return []


def _prunekit_calls(text: str) -> list[list[str]]:
    calls = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("prunekit "):
            tokens = shlex.split(line[line.index("prunekit") :])
            calls.append(tokens[1:])
    return calls


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_pipeline_uses_real_cli_options(name: str) -> None:
    doc = yaml.safe_load((CI_DIR / name).read_text())
    group: Any = typer.main.get_command(app)
    calls = [c for s in _strings(doc) for c in _prunekit_calls(s)]
    assert any(c[0] == "submit" and "--wait" in c and "--junit" in c for c in calls), calls
    for call in calls:
        command, args = group, list(call)
        # Groups (the app, `spec`) have .commands; walk down to the leaf command.
        while hasattr(command, "commands") and args and args[0] in command.commands:
            command = command.commands[args.pop(0)]
        assert not hasattr(command, "commands"), f"{name}: unknown command in {call}"
        known = {opt for p in command.params for opt in p.opts}
        unknown = [a for a in args if a.startswith("--") and a not in known]
        assert unknown == [], f"{name}: {call[0]} has no {unknown}"
