"""A prunekit structural compress job on torchvision resnet50, checked against an independent timing.

Runs the real job (state-dict + architecture in, TorchScript artifact out, sandboxed child), then times the
original and the artifact each in a fresh Python process with plain torch and a loop written here, to compare
with the report's latency figures.

Run: python benchmarks/bench_structural_job.py [--arch resnet50] [--ratio 0.5] [--batch 16] [--repeats 10]
     [--processes 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prunekit.spec import JobSpec
from worker.engine.api import JobInputs, run_job

_TIMER = """
import statistics, sys, time, torch, torchvision
torch.set_num_threads(2)
kind, arg, batch, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if kind == "jit":
    module = torch.jit.load(arg).eval()
else:
    module = getattr(torchvision.models, arg)(weights=None).eval()
x = torch.randn(batch, 3, 224, 224)
with torch.inference_mode():
    for _ in range(3):
        module(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        module(x)
        times.append((time.perf_counter() - start) * 1000)
print(statistics.median(times))
"""


def independent_latency(kind: str, arg: str, batch: int, repeats: int) -> float:
    """Median ms measured in a fresh Python process with plain torch (no prunekit code), the model alone."""
    out = subprocess.run(
        [sys.executable, "-c", _TIMER, kind, arg, str(batch), str(repeats)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--processes", type=int, default=3, help="fresh timing processes per model")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        original = getattr(torchvision.models, args.arch)(weights=None).eval()
        weights = tmpdir / "model.safetensors"
        save_file(original.state_dict(), str(weights))
        spec = JobSpec.model_validate(
            {
                "model": {"architecture": f"torchvision/{args.arch}", "input_shape": [3, 224, 224]},
                "pruning": {"method": "structural", "channel_sparsity": args.ratio},
                "finetune": {"epochs": 0},
                "evaluation": {
                    "latency": {"batch_size": args.batch, "repeats": args.repeats, "warmup": 3, "threads": 2}
                },
            }
        )
        started = time.perf_counter()
        out = run_job(JobInputs(weights, spec), tmpdir / "out")
        job_seconds = time.perf_counter() - started
        report = out.report
        assert out.artifact_path is not None and report.latency_before and report.latency_after
        # Alternate fresh processes (original, artifact, original, ...) and take the median of their medians, so
        # a burst of load on this shared machine does not decide the comparison.
        befores, afters = [], []
        for _ in range(args.processes):
            befores.append(independent_latency("torchvision", args.arch, args.batch, args.repeats))
            afters.append(independent_latency("jit", str(out.artifact_path), args.batch, args.repeats))
        ind_before, ind_after = statistics.median(befores), statistics.median(afters)
        structural = report.structural
        assert structural is not None
        result = {
            "arch": args.arch,
            "ratio": args.ratio,
            "batch": args.batch,
            "job_seconds": round(job_seconds, 1),
            "prune_seconds": report.stage_seconds.get("prune"),
            "params": [report.size_before.params_total, report.size_after.params_total],
            "macs": [structural.macs_before, structural.macs_after],
            "report_latency_ms": [report.latency_before.median_ms, report.latency_after.median_ms],
            "report_speedup": report.speedup,
            "independent_latency_ms": [ind_before, ind_after],
            "independent_runs_ms": [befores, afters],
            "independent_speedup": ind_before / ind_after,
            "before_latency_report_vs_independent": report.latency_before.median_ms / ind_before,
            "after_latency_report_vs_independent": report.latency_after.median_ms / ind_after,
            "macs_predicted_speedup": structural.macs_before / structural.macs_after,
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
