"""Artifact sizes of a mask-pruned torchvision resnet18: dense, zlib of dense, prunekit's sparse_state_dict, floor.

    python benchmarks/bench_sparse_storage.py [--repeats 7] [--threads 1] [--trained-epochs 0] [--json out.json]

Weights: resnet18 with its random initialisation (weights=None, seed 0; nothing is downloaded), pruned by global
magnitude over every conv + linear weight at 50/90/95%, or 2:4 (in each group of 4 consecutive inputs of an output
keep the 2 largest; conv1's 147 inputs per output are not divisible by 4, so it stays dense, as prunekit would ask
to exclude it). Trained weights have another value distribution: their values deflate less (see docs).

Columns: dense = the state_dict as .safetensors; zlib = that file deflated (level 6); raw = bitmask + values with no
deflate; layout 1 = prunekit's first layout (deflated bitmask + deflated byte planes); layout 2 = its second (deflated
position gaps + byte planes, deflated where that at least halves them); sparse = the sparse_state_dict file as
prunekit writes it (layout 3: one code per kept element for its gap and top byte, deflated where that saves at least
MIN_DEFLATE_SAVING, + the other bytes raw); variants of it with every part deflated and at zlib level 9. Every column
but dense, zlib and sparse (real files) sums the parts' bytes and the dense tensors, without the safetensors header.
Floors: "mask H + raw values" = the bitmask at its entropy (bits per element by the kept share of each tensor) +
the kept values' raw bytes + the dense tensors; "mask H + value H0" also
replaces the values by their order-0 entropy per byte plane (what a byte-wise entropy coder could reach without
modelling more). Load time: median of --repeats rounds (after one warm-up round) from the page cache, each round
running every way once, interleaved: the dense file with safetensors.load_file (lazy: tensors map the file), the
same + load_state_dict into resnet18 (the bytes are read), the README loader, the README loader + load_state_dict,
the README loader restoring in place (into=model.state_dict(): no new tensors, no copy), and the engine's checked
reader; then, in rounds of their own after all the warm ones, the "+ into model" and in-place loads with the file
dropped from the page cache first (posix_fadvise DONTNEED: the disk is read, as on the first load after a download);
ratio = median over rounds of (sparse + into model or in place) / (dense + into model), cold ratios the same for the
cold loads.
Bit-identical: every restored tensor's bytes, returned and in place, equal the masked model's.
Frontier (--deflate-savings): at 90%, the file written with each min_deflate_saving (a part is deflated only where
that saves at least this share; 0: wherever it is smaller; 1.0: never) against its warm in-place load, in rounds
interleaved with the dense file + load_state_dict.
--trained-epochs N: start from resnet18 trained here N epochs (AdamW, lr 1e-3) on sklearn's digits as 64x64 RGB
images instead of its random initialisation (no pretrained weights can be downloaded); --weights PATH: start
from a resnet18 state dict of your own (e.g. torchvision's ImageNet file, where you have it)."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torchvision
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import sparse_layout2  # benchmarks/, on the path when run as a script

from worker.engine.models import sparse
from worker.engine.pruning.threshold import global_magnitude_threshold

MIB = 1024 * 1024
K = TypeVar("K")
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_loader() -> Callable[..., dict[str, torch.Tensor]]:
    """The README's `load_sparse`, exactly as documented."""
    found = re.search(r"<!-- sparse-loader -->\s*```python\n(.*?)```", README.read_text(), re.S)
    if found is None:
        raise SystemExit("README.md has no sparse-loader block")
    scope: dict[str, Any] = {}
    exec(found.group(1), scope)
    loader: Callable[..., dict[str, torch.Tensor]] = scope["load_sparse"]  # (path, into=None)
    return loader


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]


def trained_resnet18(epochs: int) -> dict[str, torch.Tensor]:
    """resnet18's weights after `epochs` of AdamW on sklearn's digits as 64x64 RGB images (its 1000-way head kept)."""
    from bench_quantized_structural import _tensors, train_dense

    from tests.support.images import digit_folder, zip_folder

    with tempfile.TemporaryDirectory(prefix="bench-sparse-digits-") as tmp:
        x_train, y_train, _, _ = _tensors(zip_folder(digit_folder(Path(tmp) / "digits"), Path(tmp) / "digits.zip"))
    return train_dense("resnet18", x_train, y_train, epochs, num_classes=1000).state_dict()


def _starting_weights(path: Path | None, trained_epochs: int) -> dict[str, torch.Tensor] | None:
    """A state dict from `path`, else resnet18 trained here `trained_epochs`, else None (random init)."""
    if path is not None:
        return load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
    return trained_resnet18(trained_epochs) if trained_epochs else None


@torch.no_grad()
def pruned_resnet18(method: str, base: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """resnet18 (seed 0, or `base`'s weights) with its conv/linear weights zeroed by global magnitude or "2:4"."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    if base is not None:
        model.load_state_dict(base)
    weights = _weights(model)
    if method == "2:4":
        for w in weights:
            rows = w.reshape(w.shape[0], -1)
            if rows.shape[1] % 4:
                continue
            groups = rows.abs().reshape(rows.shape[0], -1, 4)
            keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.topk(2, dim=-1).indices, True)
            w.masked_fill_(~keep.view(w.shape), 0)
        return model
    threshold = global_magnitude_threshold([w.abs() for w in weights], float(method))
    for w in weights:
        w.masked_fill_(w.abs() <= threshold, 0)
    return model


def _h(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def _h0(data: np.ndarray) -> float:
    """Order-0 entropy of a byte array, in bytes."""
    counts = np.bincount(data, minlength=256)
    probs = counts[counts > 0] / data.size
    return float(-(probs * np.log2(probs)).sum() * data.size / 8)


def _encoded(tensor: torch.Tensor, **options: Any) -> sparse.SparseParts:
    encoded = sparse.encode_tensor(tensor, **options)
    if encoded is None:
        raise SystemExit("a resnet18 weight has too many distinct top bytes for layout 3")
    return encoded


def sizes(state: dict[str, torch.Tensor], folder: Path) -> dict[str, float]:
    """Every size column of the table, in bytes."""
    dense_path = folder / "dense.safetensors"
    save_file(state, str(dense_path))
    dense_bytes = dense_path.read_bytes()
    sparse_path = folder / "model.sparse.safetensors"
    started = time.perf_counter()
    sparse.write_sparse(state, sparse_path, {})
    write_s = time.perf_counter() - started
    out: dict[str, float] = {
        "dense": len(dense_bytes),
        "zlib": len(zlib.compress(dense_bytes, 6)),
        "sparse": sparse_path.stat().st_size,
    }
    raw = layout1 = layout2 = all_deflated = level9 = floor_raw = floor_h0 = 0.0
    _, index = sparse.encode_state(state)
    layout2_parts = sparse_layout2.write(state, folder / "layout2.safetensors", index)  # timed in load_times too
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if name not in index:
            raw, layout1, layout2, all_deflated, level9, floor_raw, floor_h0 = (
                x + nbytes for x in (raw, layout1, layout2, all_deflated, level9, floor_raw, floor_h0)
            )
            continue
        keep = tensor.reshape(-1).view(torch.int32) != 0
        kept = tensor.reshape(-1)[keep]
        mask = np.packbits(keep.numpy(), bitorder="little").tobytes()
        planes = kept.view(torch.uint8).view(-1, 4).t().contiguous().numpy()
        mask_h = tensor.numel() * _h(float(keep.float().mean())) / 8
        raw += len(mask) + kept.numel() * 4
        layout1 += len(zlib.compress(mask, 6)) + len(zlib.compress(planes.tobytes(), 6))
        layout2 += layout2_parts[name]
        all_deflated += _encoded(tensor, min_deflate_saving=0.0).nbytes
        level9 += _encoded(tensor, level=9).nbytes
        floor_raw += mask_h + kept.numel() * 4
        floor_h0 += mask_h + sum(_h0(plane) for plane in planes)
    out.update(raw=raw, layout1=layout1, layout2=layout2, all_deflated=all_deflated, level9=level9)
    out.update(floor_raw=floor_raw, floor_h0=floor_h0)
    out["write_s"] = write_s
    return out


def load_times(folder: Path, repeats: int) -> dict[str, float]:
    """Median seconds of each way to load: warm rounds, then cold rounds; within a round the ways interleave."""
    load_sparse = readme_loader()
    target = torchvision.models.resnet18(weights=None)
    into = target.state_dict()  # the model's own tensors: load_sparse(path, into=...) restores into them
    dense, sparse_path = str(folder / "dense.safetensors"), str(folder / "model.sparse.safetensors")
    warm: dict[str, Callable[[], object]] = {
        "dense_load": lambda: load_file(dense),
        "dense_into_model": lambda: target.load_state_dict(load_file(dense)),
        "sparse_load": lambda: load_sparse(sparse_path),
        "sparse_into_model": lambda: target.load_state_dict(load_sparse(sparse_path)),
        "sparse_in_place": lambda: load_sparse(sparse_path, into=into),
        "layout2_in_place": partial(sparse_layout2.loader(), str(folder / "layout2.safetensors"), into=into),
        "engine_read": lambda: sparse.read_sparse(sparse_path),
    }
    cold = {
        "dense_cold": (dense, warm["dense_into_model"]),
        "sparse_cold": (sparse_path, warm["sparse_into_model"]),
        "in_place_cold": (sparse_path, warm["sparse_in_place"]),
    }
    # Warm rounds first and apart: a file read back after posix_fadvise(DONTNEED) loads about 2x slower from the page
    # cache afterwards than one written and read normally (measured here), which would flatter the sparse ratio.
    times = {**_warm_rounds(warm, repeats), **{name: [] for name in cold}}
    os.sync()  # written pages must be clean for the kernel to drop them from the page cache
    for _ in range(repeats):
        for name, (path, fn) in cold.items():
            _evict(path)
            times[name].append(_timed(fn))
    out = {name: statistics.median(values) for name, values in times.items()}
    pairs = {
        "load_ratio": ("sparse_into_model", "dense_into_model"),
        "in_place_ratio": ("sparse_in_place", "dense_into_model"),
        "layout2_in_place_ratio": ("layout2_in_place", "dense_into_model"),
        "cold_ratio": ("sparse_cold", "dense_cold"),
        "in_place_cold_ratio": ("in_place_cold", "dense_cold"),
    }
    for ratio, (num, den) in pairs.items():
        out[ratio] = statistics.median(s / d for s, d in zip(times[num], times[den], strict=True))  # per round
    return out


def _warm_rounds(ways: Mapping[K, Callable[[], object]], repeats: int) -> dict[K, list[float]]:
    """Seconds of each way in `repeats` rounds (after a warm-up round), every way once per round, interleaved."""
    times: dict[K, list[float]] = {key: [] for key in ways}
    for round_ in range(repeats + 1):
        for key, fn in ways.items():
            elapsed = _timed(fn)
            if round_:
                times[key].append(elapsed)
    return times


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _evict(path: str) -> None:
    """Drop a file's pages from the page cache, so the next load reads the disk (as the first load after a download)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bit_identical(folder: Path, state: dict[str, torch.Tensor]) -> bool:
    """The README loader's tensors, returned and restored in place into a resnet18, have the masked model's bytes
    (and so do layout 2's, whose load is timed beside)."""
    load, path = readme_loader(), str(folder / "model.sparse.safetensors")
    model = torchvision.models.resnet18(weights=None)
    load(path, into=model.state_dict())
    layout2 = sparse_layout2.loader()(str(folder / "layout2.safetensors"))
    return all(_same_bytes(got, state) for got in (load(path), model.state_dict(), layout2))


def _same_bytes(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> bool:
    return set(got) == set(want) and all(
        got[k].dtype == v.dtype and torch.equal(got[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8))
        for k, v in want.items()
    )


def run_one(method: str, repeats: int, base: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Sizes, load times and the bit-identity check of one pruning."""
    model = pruned_resnet18(method, base)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    weights = _weights(model)
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    with tempfile.TemporaryDirectory(prefix="bench-sparse-") as tmp:
        folder = Path(tmp)
        row: dict[str, Any] = {"method": method, "weight_sparsity": zeros, **sizes(state, folder)}
        row.update(load_times(folder, repeats))
        row["bit_identical"] = bit_identical(folder, state)
    return row


def deflate_saving_frontier(
    method: str, savings: list[float], repeats: int, base: dict[str, torch.Tensor] | None = None
) -> list[dict[str, float]]:
    """File size and warm in-place load against dense + into model, per `min_deflate_saving` (interleaved rounds)."""
    state = {k: v.contiguous() for k, v in pruned_resnet18(method, base).state_dict().items()}
    load_sparse, target = readme_loader(), torchvision.models.resnet18(weights=None)
    into = target.state_dict()
    with tempfile.TemporaryDirectory(prefix="bench-sparse-frontier-") as tmp:
        dense = str(Path(tmp) / "dense.safetensors")
        save_file(state, dense)
        paths = {s: str(Path(tmp) / f"saving-{s}.safetensors") for s in savings}
        for saving, path in paths.items():
            sparse.write_sparse(state, Path(path), {}, min_deflate_saving=saving)
        ways: dict[float | str, Callable[[], object]] = {"dense": lambda: target.load_state_dict(load_file(dense))}
        ways.update({s: partial(load_sparse, p, into=into) for s, p in paths.items()})
        times = _warm_rounds(ways, repeats)
        return [
            {
                "min_deflate_saving": s,
                "mib": os.path.getsize(p) / MIB,
                "in_place_ms": statistics.median(times[s]) * 1e3,
                "dense_into_model_ms": statistics.median(times["dense"]) * 1e3,
                "ratio": statistics.median(a / d for a, d in zip(times[s], times["dense"], strict=True)),
            }
            for s, p in paths.items()
        ]


def _frontier_table(method: str, rows: list[dict[str, float]]) -> str:
    lines = [
        f"| min deflate saving ({float(method):.0%} global) | file MiB | in place ms | dense + into model ms | ratio |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['min_deflate_saving']:.2f} | {r['mib']:.2f} | {r['in_place_ms']:.1f} "
            f"| {r['dense_into_model_ms']:.1f} | {r['ratio']:.2f}x |"
        )
    return "\n".join(lines)


def _table(rows: list[dict[str, Any]]) -> str:
    def mib(row: dict[str, Any], key: str) -> str:
        return f"{row[key] / MIB:.2f} ({row[key] / row['dense']:.3f}x)"

    head = (
        "| pruning | dense MiB | zlib(dense) | bitmask+values raw | layout 1 (bitmask) | layout 2 (gaps) "
        "| **sparse_state_dict** | all parts deflated | zlib 9 | floor: mask H + raw values | floor: mask H + value H0 "
        "| write s "
        "| load dense / +into model ms | load sparse / +into model ms | ratio | in place ms | ratio "
        "| layout 2 in place ms | ratio | cold: dense / sparse / in place ms | cold ratios | bit-identical |\n"
        + "|---" * 22
        + "|"
    )
    lines = [head]
    for r in rows:
        name = r["method"] if r["method"] == "2:4" else f"{float(r['method']):.0%} global"
        lines.append(
            f"| {name} ({r['weight_sparsity']:.1%} of conv/fc zero) | {r['dense'] / MIB:.2f} | {mib(r, 'zlib')} "
            f"| {mib(r, 'raw')} | {mib(r, 'layout1')} | {mib(r, 'layout2')} | **{mib(r, 'sparse')}** "
            f"| {mib(r, 'all_deflated')} "
            f"| {mib(r, 'level9')} "
            f"| {mib(r, 'floor_raw')} | {mib(r, 'floor_h0')} | {r['write_s']:.2f} "
            f"| {r['dense_load'] * 1e3:.1f} / {r['dense_into_model'] * 1e3:.1f} "
            f"| {r['sparse_load'] * 1e3:.1f} / {r['sparse_into_model'] * 1e3:.1f} | {r['load_ratio']:.2f}x "
            f"| {r['sparse_in_place'] * 1e3:.1f} | {r['in_place_ratio']:.2f}x "
            f"| {r['layout2_in_place'] * 1e3:.1f} | {r['layout2_in_place_ratio']:.2f}x "
            f"| {r['dense_cold'] * 1e3:.1f} / {r['sparse_cold'] * 1e3:.1f} / {r['in_place_cold'] * 1e3:.1f} "
            f"| {r['cold_ratio']:.2f}x / {r['in_place_cold_ratio']:.2f}x "
            f"| {r['bit_identical']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--deflate-savings", default="0,0.15,0.3,0.5,1.0", help="min_deflate_saving values of the frontier at 90%%"
    )
    parser.add_argument(
        "--trained-epochs", type=int, default=0, help="train resnet18 this many epochs on digits first (0: random init)"
    )
    parser.add_argument("--weights", type=Path, help="a resnet18 state dict (.safetensors or .pth) to start from")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = _starting_weights(args.weights, args.trained_epochs)
    rows = [run_one(method, args.repeats, base) for method in ("0.5", "0.9", "0.95", "2:4")]
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch thread(s), "
        f"weights: {args.weights or (f'trained {args.trained_epochs} epochs on digits' if base else 'random init')}"
    )
    print(_table(rows))
    savings = [float(x) for x in args.deflate_savings.split(",") if x]
    frontier = deflate_saving_frontier("0.9", savings, args.repeats, base) if savings else []
    if frontier:
        print(_frontier_table("0.9", frontier))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "deflate_saving_frontier": frontier}, indent=2))


if __name__ == "__main__":
    main()
