"""Hand-built example reports (report.json dicts) for previews, docs and renderer tests; not real measurements."""

from __future__ import annotations

import copy
from typing import Any

_ENV = {
    "prunekit": "0.1.0",
    "torch": "2.14.1",
    "torchvision": "0.29.1",
    "python": "3.11.2",
    "platform": "Linux-6.1-x86_64",
    "device": "cpu",
    "device_name": None,
    "mixed_precision": False,
    "threads": 4,
}

_LAYERS = [
    ("features.0.weight", [16, 1, 3, 3], 144, True),
    ("features.0.bias", [16], 16, False),
    ("features.3.weight", [32, 16, 3, 3], 4608, True),
    ("features.3.bias", [32], 32, False),
    ("features.6.weight", [64, 32, 3, 3], 18432, True),
    ("features.6.bias", [64], 64, False),
    ("classifier.0.weight", [128, 256], 32768, True),
    ("classifier.0.bias", [128], 128, False),
    ("classifier.3.weight", [10, 128], 1280, False),
    ("classifier.3.bias", [10], 10, False),
]


def _layers(sparsity: float) -> list[dict[str, Any]]:
    out = []
    for i, (name, shape, params, pruned) in enumerate(_LAYERS):
        # Later, larger layers take more of the global budget, as global magnitude pruning tends to do.
        sp = min(0.98, sparsity * (0.6 + 0.12 * i)) if pruned else 0.0
        out.append(
            {
                "name": name,
                "shape": shape,
                "params": params,
                "zeros": round(params * sp),
                "sparsity": round(params * sp) / params,
                "pruned": pruned,
            }
        )
    return out


def compress_report(gate_missed: bool = True) -> dict[str, Any]:
    """A compress job at 70% sparsity with fine-tuning; one gate missed unless told otherwise."""
    history = []
    for epoch in range(1, 9):
        history.append(
            {
                "epoch": epoch,
                "train_loss": 0.9 / epoch + 0.08,
                "train_accuracy": min(0.995, 0.82 + 0.022 * epoch),
                "val_loss": 0.95 / epoch + 0.12,
                "val_accuracy": min(0.975, 0.80 + 0.02 * epoch),
                "sparsity": 0.7,
                "lr": 0.01 * (0.8**epoch),
                "seconds": 1.4,
            }
        )
    gates = [
        {"name": "max_accuracy_drop", "value": 0.008, "threshold": 0.02, "comparison": "<=", "passed": True},
        {"name": "min_sparsity", "value": 0.7, "threshold": 0.6, "comparison": ">=", "passed": True},
        {"name": "max_latency_ms", "value": 0.41, "threshold": 1.0, "comparison": "<=", "passed": True},
        {"name": "max_artifact_bytes", "value": 61_000, "threshold": 200_000, "comparison": "<=", "passed": True},
        {
            "name": "min_speedup",
            "value": 1.04,
            "threshold": 2.0 if gate_missed else 1.0,
            "comparison": ">=",
            "passed": not gate_missed,
        },
    ]
    return {
        "report_version": 1,
        "kind": "compress",
        "status": "gate_missed" if gate_missed else "passed",
        "spec": {
            "version": 1,
            "kind": "compress",
            "model": {"format": "state_dict", "architecture": "prunekit/digits_cnn"},
            "pruning": {"method": "magnitude", "scope": "global", "sparsity": 0.7, "schedule": {"kind": "oneshot"}},
            "finetune": {"epochs": 8},
            "gates": {g["name"]: g["threshold"] for g in gates},
            "seed": 0,
        },
        "seed": 0,
        "input_format": "state_dict",
        "output_format": "state_dict",
        "artifact_name": "model.safetensors",
        "data": {"train_samples": 1437, "val_samples": 360, "source": "npz", "classes": 10},
        "notes": [
            "Unstructured sparsity does not make dense kernels faster; latency is measured, not estimated.",
        ],
        "before": {
            "train": {"accuracy": 0.9958, "loss": 0.02, "samples": 1437},
            "val": {"accuracy": 0.9722, "loss": 0.09, "samples": 360},
            "gap": 0.0236,
        },
        "after": {
            "train": {"accuracy": 0.9930, "loss": 0.03, "samples": 1437},
            "val": {"accuracy": 0.9642, "loss": 0.11, "samples": 360},
            "gap": 0.0288,
        },
        "accuracy_drop": 0.008,
        "fidelity": {"split": "val", "top1_agreement": 0.975, "kl_divergence": 0.0123, "samples": 360},
        "sparsity": {
            "global_sparsity": 0.7,
            "overall_sparsity": 0.6627,
            "target_sparsity": 0.7,
            "layers": _layers(0.7),
        },
        "size_before": {
            "params_total": 57482,
            "params_nonzero": 57482,
            "flops_dense": 1_254_000,
            "flops_effective": 1_254_000,
            "flops_method": "counted",
            "artifact_bytes": 232_000,
            "artifact_zipped_bytes": 214_000,
        },
        "size_after": {
            "params_total": 57482,
            "params_nonzero": 19388,
            "flops_dense": 1_254_000,
            "flops_effective": 420_000,
            "flops_method": "counted",
            "artifact_bytes": 232_000,
            "artifact_zipped_bytes": 61_000,
        },
        "latency_before": {"median_ms": 0.43, "p90_ms": 0.5, "batch_size": 1, "repeats": 30, "device": "cpu"},
        "latency_after": {"median_ms": 0.41, "p90_ms": 0.47, "batch_size": 1, "repeats": 30, "device": "cpu"},
        "speedup": 1.04,
        "history": history,
        "gates": gates,
        "trials": [],
        "sensitivity": None,
        "stage_seconds": {"load": 0.3, "baseline": 0.8, "prune": 0.1, "finetune": 11.2, "evaluate": 0.9},
        "environment": dict(_ENV),
        "isolation": {
            "child_process": True,
            "rlimits": {"RLIMIT_AS": 8_589_934_592, "RLIMIT_CPU": 3600},
            "network": "isolated",
            "environment": "PATH, HOME, LANG",
        },
        "extra": {},
    }


def sweep_report() -> dict[str, Any]:
    """A sweep over 4 sparsities x 2 regularizer settings, with the Pareto front marked."""
    report = compress_report(gate_missed=False)
    report["kind"] = "sweep"
    report["spec"] = copy.deepcopy(report["spec"])
    report["spec"]["kind"] = "sweep"
    report["spec"]["sweep"] = {"sparsities": [0.3, 0.5, 0.7, 0.9], "regularizers": {"none": {}, "l2": {"l2": 1e-4}}}
    # (sparsity, train acc, val acc) per regularizer setting: L2 costs a little at low sparsity, helps at high.
    grid = {
        "none": [(0.3, 0.9962, 0.9711), (0.5, 0.9951, 0.9650), (0.7, 0.9870, 0.9522), (0.9, 0.9502, 0.9050)],
        "l2": [(0.3, 0.9890, 0.9683), (0.5, 0.9885, 0.9667), (0.7, 0.9810, 0.9581), (0.9, 0.9455, 0.9253)],
    }
    trials: list[dict[str, Any]] = []
    for reg, points in grid.items():
        for sp, train, val in points:
            trials.append(
                {
                    "name": f"{reg}-s{int(sp * 100)}",
                    "params": {"sparsity": sp, "regularizer": reg, "schedule": "oneshot"},
                    "sparsity": sp,
                    "train_accuracy": train,
                    "val_accuracy": val,
                    "gap": round(train - val, 4),
                    "accuracy_drop": round(0.9722 - val, 4),
                    "latency_ms": 0.42,
                    "artifact_bytes": int(232_000 * (1 - sp * 0.8)),
                    "pareto": False,
                }
            )
    # Pareto front: no other trial has both higher sparsity and higher accuracy.
    for t in trials:
        t["pareto"] = not any(
            o is not t
            and o["sparsity"] >= t["sparsity"]
            and o["val_accuracy"] >= t["val_accuracy"]
            and (o["sparsity"], o["val_accuracy"]) != (t["sparsity"], t["val_accuracy"])
            for o in trials
        )
    report["trials"] = trials
    report["notes"] = report["notes"] + ["Headline numbers are those of the best trial on the Pareto front."]
    return report


def bare_report() -> dict[str, Any]:
    """The least a report can hold: no labelled data, no latency, no history (everything optional is missing)."""
    return {
        "report_version": 1,
        "kind": "compress",
        "status": "passed",
        "spec": {"version": 1},
        "seed": 0,
        "input_format": "torchscript",
        "output_format": "torchscript",
        "before": None,
        "after": None,
        "sparsity": {"global_sparsity": 0.5, "overall_sparsity": 0.45, "layers": []},
        "size_before": {"params_total": 1000, "params_nonzero": 1000},
        "size_after": {"params_total": 1000, "params_nonzero": 550},
        "environment": dict(_ENV),
    }


def inconclusive_report() -> dict[str, Any]:
    """A magnitude job whose min_speedup 1.0 gate cannot tell: the speedup's interval straddles 1.0."""
    report = compress_report(gate_missed=False)
    report["gates"] = [dict(g) for g in report["gates"]]
    speedup = next(g for g in report["gates"] if g["name"] == "min_speedup")
    speedup.update(
        value=1.0,
        threshold=1.0,
        passed=False,
        outcome="inconclusive",
        interval_low=0.97,
        interval_high=1.04,
        confidence=0.957,
        runtime="pytorch",
        reason="speedup 1.00x, 96% interval 0.97x-1.04x (pytorch, 30 rounds) straddles 1x: timing noise decides "
        "which side the median falls on, so this gate cannot tell; raise evaluation.latency.repeats, time on a "
        "quieter machine, or drop the gate",
    )
    report["status"] = "inconclusive"
    report["speedup"] = 1.0
    report["runtimes"] = [
        {
            "runtime": "pytorch",
            "engine": "eager",
            "before": {"median_ms": 0.41, "p90_ms": 0.45, "batch_size": 1, "repeats": 30, "device": "cpu"},
            "after": {"median_ms": 0.41, "p90_ms": 0.46, "batch_size": 1, "repeats": 30, "device": "cpu"},
            "speedup": {"median": 1.0, "low": 0.96, "high": 1.05, "rounds": 30, "within_noise": True,
                        "basis": "eager vs eager", "ci_low": 0.97, "ci_high": 1.04, "confidence": 0.957},
            "speedup_possible": False,
            "speedup_why": "unstructured zeros stay in dense weights, and PyTorch has no sparse kernel that skips "
            "them: the true speedup is 1.0x",
        }
    ]  # fmt: skip
    return report
