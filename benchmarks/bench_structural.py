"""Structural pruning benchmark: torchvision resnet18/resnet50 at a 50% channel ratio, CPU, 2 threads.

Measures the artifact (TorchScript traced, saved, reloaded with torch.jit.load), not the in-memory model:
"traced" is torch.jit.trace as is, "frozen" adds torch.jit.freeze (BatchNorm folded into the convs).
Original and pruned models are timed alternately, run by run, so load from other processes on a shared
machine hits both alike. Usage:

    .venv/bin/python benchmarks/bench_structural.py [--models resnet18 resnet50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from prunekit.spec.pruning import StructuralPruning
from worker.engine.structural import StructuralResult, prune_structurally


def artifact(module: nn.Module, example: torch.Tensor, path: Path, kind: str) -> torch.jit.ScriptModule:
    """Trace (and for "frozen" also torch.jit.freeze: BatchNorm folded into convs), save, reload."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.trace(module, example)
        if kind == "frozen":
            scripted = torch.jit.freeze(scripted)
        torch.jit.save(scripted, str(path))
        return torch.jit.load(str(path))


@torch.inference_mode()
def time_alternating(
    models: dict[str, nn.Module], batch: torch.Tensor, runs: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Median and minimum milliseconds per forward for each model, timing them in turn within every run."""
    for _ in range(warmup):
        for m in models.values():
            m(batch)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(runs):
        for name, m in models.items():
            start = time.perf_counter()
            m(batch)
            times[name].append((time.perf_counter() - start) * 1000.0)
    # The minimum is the run least disturbed by other processes: a cross-check on a shared machine.
    return {k: {"median": statistics.median(v), "min": min(v)} for k, v in times.items()}


def bench(
    name: str, ratio: float, runs: dict[int, int], warmup: int, workdir: Path, kinds: list[str]
) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    example = torch.randn(1, 3, 224, 224)
    result = prune_structurally(model, StructuralPruning(channel_sparsity=ratio), example)
    return [_bench_artifact(name, kind, model, result, example, ratio, runs, warmup, workdir) for kind in kinds]


def _bench_artifact(
    name: str,
    kind: str,
    model: nn.Module,
    result: StructuralResult,
    example: torch.Tensor,
    ratio: float,
    runs: dict[int, int],
    warmup: int,
    workdir: Path,
) -> dict[str, Any]:
    original = artifact(model, example, workdir / f"{name}_{kind}_original.pt", kind)
    pruned = artifact(result.module, example, workdir / f"{name}_{kind}_pruned.pt", kind)
    with torch.inference_mode():
        assert torch.allclose(pruned(example), result.module(example), atol=1e-4), "reloaded artifact differs"
    row: dict[str, Any] = {
        "model": name,
        "artifact": kind,
        "channel_ratio": ratio,
        "params_before": result.params_before,
        "params_after": result.params_after,
        "macs_before": result.macs_before,
        "macs_after": result.macs_after,
        "macs_predicted_speedup": result.macs_reduction,
        "prune_seconds": result.seconds,
        "latency_ms": {},
    }
    for batch_size, n_runs in runs.items():
        batch = torch.randn(batch_size, 3, 224, 224)
        ms = time_alternating({"original": original, "pruned": pruned}, batch, n_runs, warmup)
        speedup = ms["original"]["median"] / ms["pruned"]["median"]
        speedup_min = ms["original"]["min"] / ms["pruned"]["min"]
        row["latency_ms"][str(batch_size)] = {
            "original": ms["original"]["median"],
            "pruned": ms["pruned"]["median"],
            "original_min": ms["original"]["min"],
            "pruned_min": ms["pruned"]["min"],
            "speedup": speedup,
            "speedup_of_minima": speedup_min,
            "share_of_mac_prediction": speedup / result.macs_reduction,
            "runs": n_runs,
        }
        print(
            f"{name} {kind} batch {batch_size}: "
            f"median {ms['original']['median']:.1f} -> {ms['pruned']['median']:.1f} ms "
            f"= {speedup:.2f}x, min {ms['original']['min']:.1f} -> {ms['pruned']['min']:.1f} ms = {speedup_min:.2f}x "
            f"(MACs predict {result.macs_reduction:.2f}x)",
            flush=True,
        )
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | artifact | params before → after | GMACs before → after (predicted speedup) | prune time | batch "
        "| median latency before → after (ms) | speedup | share of MAC prediction | speedup of minima |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for batch, lat in r["latency_ms"].items():
            lines.append(
                f"| {r['model']} | {r['artifact']} | {r['params_before'] / 1e6:.2f}M → {r['params_after'] / 1e6:.2f}M "
                f"| {r['macs_before'] / 1e9:.2f} → {r['macs_after'] / 1e9:.2f} ({r['macs_predicted_speedup']:.2f}x) "
                f"| {r['prune_seconds']:.1f} s | {batch} | {lat['original']:.1f} → {lat['pruned']:.1f} "
                f"| {lat['speedup']:.2f}x | {lat['share_of_mac_prediction']:.0%} | {lat['speedup_of_minima']:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs-b1", type=int, default=40)
    parser.add_argument("--runs-b16", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--artifacts", nargs="+", default=["traced", "frozen"], choices=["traced", "frozen"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            row
            for name in args.models
            for row in bench(
                name, args.ratio, {1: args.runs_b1, 16: args.runs_b16}, args.warmup, Path(tmp), args.artifacts
            )
        ]
    report = {
        "rows": rows,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "wall_seconds": time.time() - started,
    }
    print(markdown(rows))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
