"""Global magnitude pruning of torchvision resnet50: torch's global_unstructured vs prunekit's radix threshold.

    python benchmarks/bench_global_threshold.py [--sparsity 0.9] [--repeats 5] [--threads N] [--json out.json]

Both sides compute the keep-masks of all conv + linear weights of a randomly initialised resnet50 (weights=None,
seed 0). Timing: median (and min) over ``--repeats`` runs after one warm-up run, as wall time and as process CPU
time; CPU time is less sensitive to other processes competing for the cores. Memory: each method runs once in a
fresh subprocess; its peak extra memory is the resident-set high-water mark during the run minus the resident set
just before it (the high-water mark is reset through /proc/self/clear_refs where Linux allows it, else it falls
back to ``ru_maxrss``, which can only under-report). tracemalloc cannot see torch's allocations, hence RSS.
Correctness: the masks of both are compared entry by entry; mismatches are counted, and those not explained by a
tie at the threshold (where torch prunes an arbitrary subset of the tied weights and prunekit prunes all) too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.utils.prune as tprune
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from worker.engine.pruning.threshold import global_magnitude_masks, global_magnitude_threshold

METHODS = ("torch_global_unstructured", "prunekit_masks", "prunekit_threshold_only")


def build_layers() -> list[nn.Module]:
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def torch_masks(layers: list[nn.Module], amount: float) -> list[torch.Tensor]:
    """global_unstructured; the masks are the ``weight_mask`` buffers it leaves on the modules."""
    tprune.global_unstructured([(m, "weight") for m in layers], pruning_method=tprune.L1Unstructured, amount=amount)
    return [m.weight_mask for m in layers]


def undo_torch(layers: list[nn.Module]) -> None:
    """Remove the reparametrisation and put the unpruned weights back (untimed), so repeats see the same input."""
    for m in layers:
        if hasattr(m, "weight_orig"):
            original = m.weight_orig.data  # prune.remove overwrites weight_orig.data with the pruned values
            tprune.remove(m, "weight")
            m.weight.data = original


def prunekit_masks(layers: list[nn.Module], amount: float) -> list[torch.Tensor]:
    return global_magnitude_masks([m.weight for m in layers], amount)


def prunekit_threshold(layers: list[nn.Module], amount: float) -> float:
    return global_magnitude_threshold([m.weight for m in layers], amount)


RUNNERS: dict[str, Callable[[list[nn.Module], float], Any]] = {
    "torch_global_unstructured": torch_masks,
    "prunekit_masks": prunekit_masks,
    "prunekit_threshold_only": prunekit_threshold,
}


def timed(fn: Callable[[], Any], repeats: int, teardown: Callable[[], None]) -> dict[str, Any]:
    fn()  # warm-up: kernels, thread pool, allocator
    teardown()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
        teardown()
    return {
        "wall_median_s": statistics.median(wall),
        "wall_min_s": min(wall),
        "cpu_median_s": statistics.median(cpu),
        "wall_all_s": wall,
    }


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_memory_child(method: str, amount: float) -> dict[str, Any]:
    """Runs in a fresh process: peak RSS increase of one call of ``method`` on resnet50."""
    layers = build_layers()
    small = [nn.Linear(64, 64), nn.Conv2d(4, 8, 3)]
    RUNNERS[method](small, amount)  # initialise kernels and thread pools outside the measurement
    rss_before = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        how = "VmHWM after clear_refs"
    except OSError:
        how = "ru_maxrss (lower bound)"
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    RUNNERS[method](layers, amount)
    seconds = time.perf_counter() - t0
    if how.startswith("VmHWM"):
        peak = _status_kib("VmHWM")
    else:
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, maxrss_before)
    assert rss_before is not None and peak is not None
    weights = sum(m.weight.numel() * m.weight.element_size() for m in layers)
    return {"extra_bytes": (peak - rss_before) * 1024, "weights_bytes": weights, "how": how, "cold_run_s": seconds}


def memory_in_subprocess(method: str, amount: float, threads: int | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child-memory", method, "--sparsity", str(amount)]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare(layers: list[nn.Module], amount: float) -> dict[str, int]:
    ours = prunekit_masks(layers, amount)
    theirs = [m.bool() for m in torch_masks(layers, amount)]
    undo_torch(layers)
    threshold = prunekit_threshold(layers, amount)
    mismatches = unexplained = ties = 0
    for m, a, b in zip(layers, ours, theirs, strict=True):
        diff = a != b
        mismatches += int(diff.sum())
        w = m.weight.detach().abs()
        unexplained += int((diff & (w != threshold)).sum())
        ties += int((w == threshold).sum())
    n = sum(m.weight.numel() for m in layers)
    return {
        "weights": n,
        "k_torch": round(amount * n),
        "pruned_prunekit": sum(int((~a).sum()) for a in ours),
        "pruned_torch": sum(int((~b).sum()) for b in theirs),
        "mismatches": mismatches,
        "mismatches_not_ties": unexplained,
        "weights_equal_to_threshold": ties,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurements")
    ap.add_argument("--child-memory", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        print(json.dumps(measure_memory_child(args.child_memory, args.sparsity)))
        return

    load_before = os.getloadavg()
    layers = build_layers()
    correctness = compare(layers, args.sparsity)
    timings = {
        name: timed(lambda fn=fn: fn(layers, args.sparsity), args.repeats, lambda: undo_torch(layers))
        for name, fn in RUNNERS.items()
    }
    memory = (
        {} if args.no_memory else {name: memory_in_subprocess(name, args.sparsity, args.threads) for name in METHODS}
    )
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "sparsity": args.sparsity,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "correctness": correctness,
        "timings": timings,
        "memory": memory,
    }
    base = timings["torch_global_unstructured"]
    print(
        f"resnet50 conv+linear weights: {correctness['weights']:,}, sparsity {args.sparsity}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load avg {load_before[0]:.1f}\n"
    )
    print(
        "| method | wall median | wall min | CPU median | speed-up (wall median) | speed-up (CPU) | peak extra memory |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in METHODS:
        t = timings[name]
        mem = memory.get(name)
        mem_s = (
            f"{mem['extra_bytes'] / 2**20:.1f} MiB ({mem['extra_bytes'] / mem['weights_bytes']:.2f}x weights)"
            if mem
            else "-"
        )
        print(
            f"| {name} | {t['wall_median_s'] * 1e3:.1f} ms | {t['wall_min_s'] * 1e3:.1f} ms | "
            f"{t['cpu_median_s'] * 1e3:.1f} ms | {base['wall_median_s'] / t['wall_median_s']:.1f}x | "
            f"{base['cpu_median_s'] / t['cpu_median_s']:.1f}x | {mem_s} |"
        )
    print(
        f"\nmasks: {correctness['mismatches']} mismatching entries "
        f"({correctness['mismatches_not_ties']} not explained by ties; "
        f"{correctness['weights_equal_to_threshold']} weights equal the threshold); pruned "
        f"{correctness['pruned_prunekit']:,} (prunekit) vs {correctness['pruned_torch']:,} (torch), k = "
        f"{correctness['k_torch']:,}"
    )
    if memory:
        print(
            f"memory measured as: {memory['prunekit_masks']['how']}; one copy of the weights = "
            f"{memory['prunekit_masks']['weights_bytes'] / 2**20:.1f} MiB"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
