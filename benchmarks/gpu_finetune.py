"""GPU check of the fine-tuning path: compress jobs with device=cuda (bf16 autocast), in the sandbox.

Run on a machine with a GPU: python benchmarks/gpu_finetune.py [--out DIR]
Prints one JSON line per job with timings, accuracy and device, and writes them to DIR/gpu_results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prunekit.spec import JobSpec
from tests.support.digits import train_digits_cnn, write_digits_npz
from worker.engine.api import JobInputs, run_job


def _spec(arch: str, kwargs: dict[str, object], device: str, epochs: int, sparsity: float) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model": {"architecture": arch, "kwargs": kwargs},
            "pruning": {
                "method": "magnitude",
                "scope": "global",
                "sparsity": sparsity,
                "schedule": {"kind": "gradual", "frequency": 5},
            },
            "finetune": {
                "epochs": epochs,
                "batch_size": 128,
                "optimizer": {"name": "adamw", "lr": 2e-3},
                "regularizers": {"l1": 1e-5, "l2": 1e-4, "distillation": {"alpha": 0.5}},
            },
            "evaluation": {"latency": {"batch_size": 16, "repeats": 30}},
            "device": device,
        }
    )


def _summary(name: str, device: str, out: object, wall: float) -> dict[str, object]:
    report = out.report  # type: ignore[attr-defined]
    return {
        "job": name,
        "device_requested": device,
        "device": report.environment.device,
        "device_name": report.environment.device_name,
        "mixed_precision": report.environment.mixed_precision,
        "val_before": report.before.val.accuracy if report.before else None,
        "val_after": report.after.val.accuracy if report.after else None,
        "sparsity": report.sparsity.global_sparsity,
        "finetune_s": report.stage_seconds.get("finetune"),
        "latency_after_ms": report.latency_after.median_ms if report.latency_after else None,
        "wall_s": round(wall, 2),
        "isolation": report.isolation.model_dump() if report.isolation else None,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        digits = write_digits_npz(tmpdir / "digits.npz")
        cnn = tmpdir / "cnn.pt"
        torch.jit.save(torch.jit.script(train_digits_cnn()), str(cnn))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2048, 3, 32, 32), dtype=np.float32)
        y = rng.integers(0, 10, 2048)
        synth = tmpdir / "synth.npz"
        np.savez(synth, x_train=x[:1536], y_train=y[:1536], x_val=x[1536:], y_val=y[1536:])
        import torchvision

        resnet = tmpdir / "resnet18.safetensors"
        save_file(torchvision.models.resnet18(num_classes=10).state_dict(), str(resnet))
        jobs = [
            ("digits_cnn_torchscript", cnn, digits, "prunekit/digits_cnn", {}, 10, 0.9),
            ("resnet18_state_dict_synthetic", resnet, synth, "torchvision/resnet18", {"num_classes": 10}, 2, 0.7),
        ]
        for device in args.devices:
            for name, model, data, arch, kwargs, epochs, sparsity in jobs:
                started = time.perf_counter()
                out = run_job(
                    JobInputs(model, _spec(arch, kwargs, device, epochs, sparsity), data), tmpdir / f"{name}-{device}"
                )
                row = _summary(name, device, out, time.perf_counter() - started)
                print(json.dumps(row), flush=True)
                results.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
