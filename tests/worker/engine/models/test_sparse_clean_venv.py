"""Acceptance (issue 11): a sparse artifact restores bit-identical weights with the README loader in a fresh
virtualenv holding only torch, numpy and safetensors, installed from the package index, without prunekit.

The virtualenv is built once per machine (a few minutes: torch is large) under the temp folder, keyed by the
torch version, and checked on every run to hold no prunekit.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from prunekit.spec import JobSpec
from tests.worker.engine.models.test_sparse import _pruned, _two_four, readme_loader
from worker.engine.api import JobInputs, run_job
from worker.engine.models.sparse import write_sparse

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

TORCH = torch.__version__.split("+")[0]

CHECK = """
import importlib.util, sys
from safetensors.torch import load_file
assert importlib.util.find_spec("prunekit") is None, "prunekit is importable in the clean virtualenv"
for sparse, dense in zip(sys.argv[1::2], sys.argv[2::2]):
    got, want = load_sparse(sparse), load_file(dense)
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert torch.equal(got[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k
    into = {k: torch.full_like(v, 7) for k, v in want.items()}  # a model's tensors, holding other values
    load_sparse(sparse, into=into)
    for k, v in want.items():
        assert torch.equal(into[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k
    print("identical", len(want), sparse.rsplit("/", 1)[-1])
"""


def _clean_venv() -> Path:
    """torch==<ours>, numpy and safetensors in a virtualenv of their own (built once, under a lock)."""
    root = Path(tempfile.gettempdir()) / f"prunekit-clean-venv-torch{TORCH}"
    python = root / "bin" / "python"
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".complete").is_file():
            return python
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--only-binary=:all:"]
        subprocess.run([*pip, f"torch=={TORCH}", "numpy", "safetensors"], check=True, timeout=1200)
        (root / ".complete").touch()
    return python


def _masked_pairs(state_dict_model: Path, tmp_path: Path) -> list[Path]:
    """(sparse, dense) file pairs: a real job's artifacts, and synthetic tensors of every supported dtype."""
    spec = {
        "model": {"architecture": "prunekit/digits_cnn", "input_shape": [1, 8, 8]},
        "pruning": {"method": "magnitude", "sparsity": 0.9},
        "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
    }
    out = []
    for fmt in ("sparse_state_dict", "state_dict"):
        job = JobSpec.model_validate({**spec, "output": {"format": fmt}})
        artifact = run_job(JobInputs(state_dict_model, job), tmp_path / fmt, isolate=False).artifact_path
        assert artifact is not None
        out.append(artifact)
    synthetic = {
        "f32": _pruned((256, 64), 0.95),
        "f16": _pruned((64, 64), 0.9, torch.float16),
        "bf16": _pruned((64, 64), 0.5, torch.bfloat16),
        "f64": _pruned((64, 64), 0.9, torch.float64),
        "nm": _two_four(32, 64),
        "neg_zero": torch.full((512,), -0.0),
        "ints": torch.arange(10),
    }
    write_sparse(synthetic, tmp_path / "synthetic.sparse.safetensors", {})
    save_file(synthetic, str(tmp_path / "synthetic.safetensors"))
    return [*out, tmp_path / "synthetic.sparse.safetensors", tmp_path / "synthetic.safetensors"]


def test_readme_loader_in_a_virtualenv_without_prunekit(state_dict_model: Path, tmp_path: Path) -> None:
    pairs = _masked_pairs(state_dict_model, tmp_path)
    assert load_file(str(pairs[1]))  # the dense reference is a real state_dict
    script = tmp_path / "check.py"
    script.write_text(readme_loader() + CHECK)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # -I: no PYTHONPATH, no user site, not the script's folder; cwd outside the repository
    done = subprocess.run(
        [str(_clean_venv()), "-I", str(script), *map(str, pairs)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("identical") == 2
