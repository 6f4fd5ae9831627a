"""`prunekit submit --dry-run` against the real stack (issue 11): the worker runs kind dry_run in its sandbox, the
client prints the summary, saves report.json and exits 0, or 2 when the full job would hit problems."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prunekit.cli.exit_codes import ExitCode
from tests.integration.conftest import Stack
from tests.worker.engine.huggingface import builders

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _submit_dry_run(
    stack: Stack, folder: Path, pruning: dict[str, object], out: Path
) -> subprocess.CompletedProcess[str]:
    spec = out.parent / f"{out.name}.yaml"
    spec.write_text(yaml.safe_dump({"pruning": pruning, "finetune": {"epochs": 2}}))
    env = {**os.environ, "PRUNEKIT_SERVER": stack.base_url, "PRUNEKIT_API_KEY": stack.api_key}
    args = ["submit", str(folder), "--spec", str(spec), "--dry-run", "--out", str(out), "--poll-interval", "0.5"]
    return subprocess.run(
        [sys.executable, "-m", "prunekit.cli.main", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_submit_dry_run_prints_the_plan_and_exits_by_its_problems(live_server: Stack, tmp_path: Path) -> None:
    folder = builders.gpt2(tmp_path / "tiny-gpt2")
    done = _submit_dry_run(live_server, folder, {"method": "magnitude", "sparsity": 0.5}, tmp_path / "mask")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert "detected: huggingface" in done.stderr and "no problems" in done.stderr
    report = json.loads((tmp_path / "mask" / "report.json").read_text())
    assert report["kind"] == "dry_run" and report["dry_run"]["task"] == "causal_lm" and report["dry_run"]["prunable"]
    assert not list((tmp_path / "mask").glob("model*"))  # nothing pruned, nothing to download

    done = _submit_dry_run(live_server, folder, {"method": "structural"}, tmp_path / "structural")
    assert done.returncode == ExitCode.INVALID_INPUT, done.stdout + done.stderr
    assert "blocker:" in done.stderr and "problem structural_blocked" in done.stderr
    assert "Hugging Face" in done.stderr and "1 problem(s)" in done.stderr
