"""A structurally pruned model saves as TorchScript and .pt2 and reloads in a Python that cannot import prunekit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from prunekit.spec.pruning import StructuralPruning
from tests.worker.engine.structural.conftest import make_model
from worker.engine.structural import prune_structurally

# Runs in a fresh interpreter where importing prunekit, worker or tests fails, so the artifacts must be
# self-contained (no pickled prunekit classes, no code from this repository).
_LOADER = textwrap.dedent(
    """
    import sys, importlib.abc
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"prunekit", "worker", "tests"}:
                raise ImportError("blocked: " + name)
            return None
    sys.meta_path.insert(0, _Block())
    import torch
    d = sys.argv[1]
    x = torch.load(d + "/x.pt")
    expected = torch.load(d + "/expected.pt")
    for name in ("scripted.pt", "traced.pt"):
        out = torch.jit.load(d + "/" + name)(x)
        assert torch.allclose(out, expected, atol=1e-6), name
    out = torch.export.load(d + "/exported.pt2").module()(x)
    assert torch.allclose(out, expected, atol=1e-6), "exported"
    assert not {"prunekit", "worker"} & set(sys.modules)
    print("reloaded", tuple(out.shape))
    """
)


def test_pruned_model_saves_and_reloads_without_prunekit(tmp_path: Path) -> None:
    model, x = make_model("tiny_resnet")
    pruned = prune_structurally(model, StructuralPruning(channel_sparsity=0.5), x).module.eval()
    probe = torch.randn(3, 1, 8, 8)  # another batch size than the one traced/exported with
    with torch.no_grad():
        expected = pruned(probe)
    torch.jit.save(torch.jit.script(pruned), str(tmp_path / "scripted.pt"))
    torch.jit.save(torch.jit.trace(pruned, x), str(tmp_path / "traced.pt"))
    program = torch.export.export(pruned, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "exported.pt2"))
    torch.save(probe, tmp_path / "x.pt")
    torch.save(expected, tmp_path / "expected.pt")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _LOADER, str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reloaded (3, 10)" in proc.stdout
