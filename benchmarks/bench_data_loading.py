"""Image-folder data loading: prunekit's lazy loader against torchvision's ImageFolder + DataLoader, same files.

sklearn's digits are rendered to PNG (upscaled to 32x32, repeated to the size asked for) as train/<digit>/<n>.png
and zipped. Each variant runs in its own child process, so each peak RSS is its own:
- prunekit: `load_dataset` on the .zip (safe extraction, every image checked), then one pass over the
  training rows in batches through `row_batches` (a DataLoader in the job's process), as evaluation does;
- torchvision: `ImageFolder` on the same extracted files with Grayscale + ToTensor, `DataLoader` with the same
  batch size and num_workers=0 (the job's sandbox gives DataLoader workers no shared memory).
Images/s is over the pass alone; "open" is prunekit's extraction and check of every member (torchvision's: its
folder scan). Peak RSS must not grow with the dataset's size; equal pixel sums: both read the same pixels.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_data_loading.py [--sizes 2000 20000] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VARIANTS = ("prunekit", "torchvision")


def write_pngs(folder: Path, n: int) -> None:
    """n digit PNGs of 32x32 under folder/train/<digit>/."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(n):
        k = i % len(digits.images)
        img = Image.fromarray(np.round(digits.images[k] / 16 * 255).astype(np.uint8), mode="L").resize((32, 32))
        target = folder / "train" / str(int(digits.target[k]))
        target.mkdir(parents=True, exist_ok=True)
        img.save(target / f"{i:06d}.png")


def zip_folder(folder: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w") as zf:
        for p in sorted(folder.rglob("*.png")):
            zf.write(p, p.relative_to(folder).as_posix())


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_prunekit(archive: Path, batch_size: int) -> dict[str, float]:
    import torch

    from prunekit.spec import DataSpec
    from worker.engine.data import load_dataset
    from worker.engine.datasets.rows import row_batches
    from worker.engine.evaluation.metrics import eval_slices

    base = _peak_rss_mib()
    start = time.perf_counter()
    ds = load_dataset(archive, DataSpec(image_size=[32, 32], channels=1, val_fraction=0.01), None)
    opened = time.perf_counter()
    seen, checksum = 0, 0.0
    for inputs in (ds.train_inputs(), ds.val_inputs()):  # every image once, as torchvision's pass below
        for batch in row_batches(inputs, eval_slices(len(inputs["x"]), batch_size)):
            x = batch["x"]
            seen, checksum = seen + len(x), checksum + float(torch.sum(x, dtype=torch.float64))
    done = time.perf_counter()
    return {"images": seen, "open_s": opened - start, "pass_s": done - opened, "base_mib": base, "checksum": checksum}


def run_torchvision(folder: Path, batch_size: int) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    base = _peak_rss_mib()
    start = time.perf_counter()
    tf = transforms.Compose([transforms.Grayscale(1), transforms.ToTensor()])
    data = datasets.ImageFolder(str(folder / "train"), transform=tf)
    opened = time.perf_counter()
    seen, checksum = 0, 0.0
    for x, _ in DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0):
        seen, checksum = seen + len(x), checksum + float(torch.sum(x, dtype=torch.float64))
    done = time.perf_counter()
    return {"images": seen, "open_s": opened - start, "pass_s": done - opened, "base_mib": base, "checksum": checksum}


def child(variant: str, workdir: Path, batch_size: int) -> None:
    """One variant in this process; prints its result as JSON."""
    import torch

    torch.set_num_threads(1)
    if variant == "prunekit":
        result = run_prunekit(workdir / "data.zip", batch_size)
    else:
        result = run_torchvision(workdir / "files", batch_size)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result))


def measure(variant: str, workdir: Path, batch_size: int) -> dict[str, float]:
    scratch = workdir / f"tmp-{variant}"
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--child", variant, "--workdir", str(workdir), "--batch-size", str(batch_size)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workdir, args.batch_size)
        return
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print("| images | variant | open s | images/s (pass) | peak RSS MiB | RSS after imports MiB | pixel sum |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
            workdir = Path(tmp)
            write_pngs(workdir / "files", n)
            zip_folder(workdir / "files", workdir / "data.zip")
            for variant in VARIANTS:
                r = measure(variant, workdir, args.batch_size)
                rate = r["images"] / r["pass_s"]
                print(
                    f"| {n} | {variant} | {r['open_s']:.2f} | {rate:,.0f} | {r['peak_rss_mib']:.0f} | "
                    f"{r['base_mib']:.0f} | {r['checksum']:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
