"""Structural 50% + int8 on ONNX Runtime against the dense eager and dense ONNX models (issue 11).

For torchvision resnet18 and resnet50 (10 classes) on sklearn's digits rendered to PNGs in an image-folder
archive (resized to 64x64, 3 channels, by prunekit's own loader): train the dense model here, run one prunekit
compress job (structural 50% of channels, fine-tuning, then `int8_static_onnx` calibrated on training rows), and
in the same process time, interleaved, the dense eager model, the dense model exported to ONNX, and the delivered
int8 ONNX model, at batch 1 and 16. Accuracy of every stage comes from the report; the delivered model's is also
recomputed here with plain onnxruntime.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_quantized_structural.py [--archs resnet18 resnet50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prunekit.spec import DataSpec, JobSpec
from prunekit.spec.report import Report
from tests.support.images import digit_folder, zip_folder
from worker.engine.api import JobInputs, run_job
from worker.engine.data import load_dataset

SIZE, THREADS = 64, 2


def _tensors(archive: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and validation pixels and labels, decoded by prunekit's loader (what the job will see)."""
    ds = load_dataset(archive, DataSpec(image_size=[SIZE, SIZE], channels=3), None)
    x_train, x_val = (torch.as_tensor(next(iter(d.values()))[:]) for d in (ds.train_inputs(), ds.val_inputs()))
    assert ds.y_train is not None and ds.y_val is not None
    return x_train, ds.y_train, x_val, ds.y_val


def train_dense(arch: str, x: torch.Tensor, y: torch.Tensor, epochs: int, num_classes: int = 10) -> torch.nn.Module:
    """The dense model, trained here from random init (no pretrained weights can be downloaded)."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def job_spec(arch: str, epochs: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model": {"architecture": f"torchvision/{arch}", "kwargs": {"num_classes": 10}},
            "pruning": {"method": "structural", "channel_sparsity": 0.5},
            "finetune": {"epochs": epochs, "batch_size": 32, "optimizer": {"lr": 1e-3}},
            "quantization": {"method": "int8_static_onnx", "calibration_samples": 256},
            "data": {"image_size": [SIZE, SIZE], "channels": 3},
            "evaluation": {"batch_size": 64, "latency": {"batch_size": 1, "repeats": 20, "threads": THREADS}},
            "device": "cpu",
        }
    )


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    # Spinning ORT threads would keep burning CPU between calls and slow the eager model timed next to them.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _ort_call(session: ort.InferenceSession) -> Callable[[torch.Tensor], object]:
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})


def ort_accuracy(session: ort.InferenceSession, x: torch.Tensor, y: torch.Tensor) -> float:
    call, hits = _ort_call(session), 0
    for chunk, labels in zip(x.split(64), y.split(64), strict=True):
        hits += int((np.asarray(call(chunk)[0]).argmax(1) == labels.numpy()).sum())  # type: ignore[index]
    return hits / len(y)


def interleaved(calls: dict[str, Callable[[torch.Tensor], object]], batch: int, repeats: int) -> dict[str, float]:
    """Median ms per call of each model, timed in turn for `repeats` rounds (load falls on all alike)."""
    x = torch.randn(batch, 3, SIZE, SIZE)
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.inference_mode():
        for call in calls.values():
            for _ in range(3):
                call(x)
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call(x)
                times[name].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def run_arch(arch: str, archive: Path, tensors: tuple[torch.Tensor, ...], args: argparse.Namespace, tmp: Path) -> None:
    x_train, y_train, x_val, y_val = tensors
    started = time.perf_counter()
    dense = train_dense(arch, x_train, y_train, args.pretrain_epochs)
    trained_s = time.perf_counter() - started
    weights = tmp / f"{arch}.safetensors"
    save_file(dense.state_dict(), str(weights))
    started = time.perf_counter()
    outputs = run_job(JobInputs(spec=job_spec(arch, args.epochs), model_path=weights, data_path=archive), tmp / arch)
    job_s = time.perf_counter() - started
    report = Report.model_validate_json(outputs.report_path.read_text())
    dense_onnx = tmp / f"{arch}-dense.onnx"
    torch.onnx.export(dense, (torch.randn(1, 3, SIZE, SIZE),), str(dense_onnx), dynamic_shapes={"x": {0: "batch"}})
    delivered = _session(outputs.artifact_path)  # type: ignore[arg-type]
    calls = {
        "dense eager": dense,
        "dense ONNX": _ort_call(_session(dense_onnx)),
        "structural 50% + int8 ONNX": _ort_call(delivered),
    }
    print(f"\n### {arch}: pretrain {trained_s:.0f} s ({args.pretrain_epochs} epochs), job {job_s:.0f} s\n")
    print("| stage | val accuracy | train accuracy | artifact | params | latency (report) |")
    print("|---|---|---|---|---|---|")
    for stage in report.stages:
        acc = f"{stage.val.accuracy:.4f}" if stage.val and stage.val.accuracy is not None else "-"
        train = f"{stage.train.accuracy:.4f}" if stage.train and stage.train.accuracy is not None else "-"
        size = f"{stage.artifact_bytes / 2**20:.2f} MiB" if stage.artifact_bytes else "-"
        params = f"{stage.params_total / 1e6:.2f}M" if stage.params_total else "-"
        lat = f"{stage.latency_ms:.2f} ms ({stage.runtime})" if stage.latency_ms else "-"
        print(
            f"| {stage.name}{' (delivered)' if stage.delivered else ''} | {acc} | {train} | {size} | {params} | {lat} |"
        )
    independent = ort_accuracy(delivered, x_val, y_val)
    print(f"\ndelivered model's val accuracy recomputed with plain onnxruntime: {independent:.4f}")
    print("\n| batch | dense eager ms | dense ONNX ms | pruned+int8 ONNX ms | vs eager | vs dense ONNX |")
    print("|---|---|---|---|---|---|")
    for batch in (1, 16):
        t = interleaved(calls, batch, args.repeats)
        eager, onnx, q = t["dense eager"], t["dense ONNX"], t["structural 50% + int8 ONNX"]
        print(f"| {batch} | {eager:.2f} | {onnx:.2f} | {q:.2f} | {eager / q:.2f}x | {onnx / q:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs after pruning")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory(prefix="bench-q-") as tmp_dir:
        tmp = Path(tmp_dir)
        archive = zip_folder(digit_folder(tmp / "digits"), tmp / "digits.zip")
        tensors = _tensors(archive)
        print(f"digits: {len(tensors[1])} train / {len(tensors[3])} val images, {SIZE}x{SIZE} RGB, {THREADS} threads")
        for arch in args.archs:
            run_arch(arch, archive, tensors, args, tmp)


if __name__ == "__main__":
    main()
