"""Real small data (sklearn's digits, shipped offline) and a small CNN trained on it, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def digits_arrays(seed: int = 0, val_fraction: float = 0.25) -> dict[str, np.ndarray]:
    """x as float32 [N,1,8,8] scaled to [0,1], y as int64, split by a seeded permutation."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_val = int(len(x) * val_fraction)
    val, train = perm[:n_val], perm[n_val:]
    return {"x_train": x[train], "y_train": y[train], "x_val": x[val], "y_val": y[val]}


def write_digits_npz(path: Path, labelled: bool = True) -> Path:
    arrays = digits_arrays()
    if labelled:
        np.savez(path, **arrays)
    else:
        np.savez(path, x=np.concatenate([arrays["x_train"], arrays["x_val"]]))
    return path


def train_digits_cnn(epochs: int = 12, seed: int = 0, width: int = 16) -> torch.nn.Module:
    """A DigitsCNN trained to ~97% validation accuracy in a few seconds on a CPU."""
    from worker.engine.models.builtin import DigitsCNN

    torch.manual_seed(seed)
    arrays = digits_arrays()
    x, y = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
    model = DigitsCNN(num_classes=10, width=width)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(module: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Independent top-1 accuracy, written without any prunekit code."""
    with torch.no_grad():
        out = module(torch.from_numpy(x))
        out = out[0] if isinstance(out, (tuple, list)) else out
    return float((out.argmax(1).numpy() == y).mean())
