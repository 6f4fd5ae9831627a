"""Digits: pruning recipes against sparsity, with train/val accuracy and the generalization gap.

Recipes (same epochs for every fine-tuned one):
- oneshot: global magnitude pruning, no fine-tuning
- finetune: one-shot pruning + plain fine-tuning
- regularized: one-shot pruning + fine-tuning with L2, L1 and distillation from the original
- gradual: cubic schedule (Zhu & Gupta) during the regularized fine-tuning
- torch_prune_ft: torch.nn.utils.prune.global_unstructured + the same plain fine-tuning, written without prunekit

Run: python benchmarks/bench_digits.py [--epochs 10] [--sparsities 0.5 0.7 0.9 0.95 0.98] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prunekit.spec import JobSpec
from tests.support.digits import accuracy, digits_arrays, train_digits_cnn, write_digits_npz
from worker.engine.api import JobInputs, run_job

RECIPES = ("oneshot", "finetune", "regularized", "gradual")


def recipe_spec(recipe: str, sparsity: float, epochs: int) -> JobSpec:
    pruning: dict[str, object] = {"method": "magnitude", "scope": "global", "sparsity": sparsity}
    finetune: dict[str, object] = {
        "epochs": 0 if recipe == "oneshot" else epochs,
        "optimizer": {"name": "adam", "lr": 2e-3},
    }
    if recipe in ("regularized", "gradual"):
        finetune["regularizers"] = {"l2": 1e-4, "l1": 1e-5, "distillation": {"alpha": 0.5, "temperature": 4.0}}
    if recipe == "gradual":
        pruning["schedule"] = {"kind": "gradual", "end_epoch": max(1, epochs * 2 // 3), "frequency": 5}
    return JobSpec.model_validate(
        {
            "model": {"architecture": "prunekit/digits_cnn"},
            "pruning": pruning,
            "finetune": finetune,
            "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
        }
    )


def torch_prune_finetune(
    model: torch.nn.Module, sparsity: float, epochs: int, arrays: dict[str, np.ndarray]
) -> torch.nn.Module:
    """The obvious alternative: torch's global_unstructured, then plain fine-tuning with masks held by torch."""
    model = copy.deepcopy(model)
    layers = [(m, "weight") for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][:-1]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=sparsity)
    x, y = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    for module, name in layers:
        prune.remove(module, name)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.9, 0.95, 0.98])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    arrays = digits_arrays()
    started = time.perf_counter()
    dense = train_digits_cnn()
    rows = [
        (
            "dense",
            0.0,
            accuracy(dense, arrays["x_train"], arrays["y_train"]),
            accuracy(dense, arrays["x_val"], arrays["y_val"]),
        )
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        data = write_digits_npz(tmpdir / "digits.npz")
        model_path = tmpdir / "dense.pt"
        torch.jit.save(torch.jit.script(dense), str(model_path))
        for sparsity in args.sparsities:
            for recipe in RECIPES:
                out = run_job(
                    JobInputs(model_path, recipe_spec(recipe, sparsity, args.epochs), data),
                    tmpdir / f"{recipe}-{sparsity}",
                    isolate=False,
                )
                after = out.report.after
                assert after is not None
                rows.append(
                    (
                        recipe,
                        out.report.sparsity.global_sparsity,
                        after.train.accuracy or 0.0,
                        after.val.accuracy or 0.0,
                    )
                )
            ref = torch_prune_finetune(dense, sparsity, args.epochs, arrays)
            kept = [m.weight for m in ref.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][:-1]
            measured = sum(int((w == 0).sum()) for w in kept) / sum(w.numel() for w in kept)
            rows.append(
                (
                    "torch_prune_ft",
                    measured,
                    accuracy(ref, arrays["x_train"], arrays["y_train"]),
                    accuracy(ref, arrays["x_val"], arrays["y_val"]),
                )
            )
            print(f"sparsity {sparsity} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    table = render(rows, args, time.perf_counter() - started)
    print(table)
    if args.out:
        args.out.write_text(table)


def render(rows: list[tuple[str, float, float, float]], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "Command: `python benchmarks/bench_digits.py "
        f"--epochs {args.epochs} --sparsities {' '.join(map(str, args.sparsities))}`",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; total {seconds:.0f} s. Data: sklearn digits, 1348 train / 449 val, "
        "DigitsCNN (prunable: all conv/linear but the classifier).",
        "",
        "| recipe | sparsity | train acc | val acc | gap (train-val) |",
        "|---|---:|---:|---:|---:|",
    ]
    for recipe, sparsity, train, val in rows:
        lines.append(f"| {recipe} | {sparsity:.3f} | {train:.4f} | {val:.4f} | {train - val:+.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
