"""Wall time of a dry run (kind dry_run, issue 11) on resnet50 and on transformer checkpoints, on CPU.

Models (random init, nothing downloaded): torchvision resnet50 as a safetensors state-dict (input [3, 224, 224]);
Hugging Face GPT-2 causal LMs saved with save_pretrained: the 2-layer test checkpoint of
tests/worker/engine/huggingface/builders.py and a GPT-2-small-sized one (12 layers, 768 wide, the builders'
300-token tokenizer). Each case runs `repeats` times through worker.engine.api.run_job, in-process and in the
job sandbox (what `prunekit compress --dry-run` runs by default), with one torch thread; the table gives medians.
"engine s" is report.dry_run.seconds (loading, one forward pass, planning, counting); "run_job s" adds the report
render; "sandboxed s" adds the child process start (interpreter, torch and transformers imports).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dry_run.py [--repeats 3] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
import transformers
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prunekit.reporting.common import human_count
from prunekit.spec import JobSpec
from tests.worker.engine.huggingface import builders
from worker.engine.api import JobInputs, run_job

RESNET = {"architecture": "torchvision/resnet50", "input_shape": [3, 224, 224]}
METHODS = {"magnitude": {"method": "magnitude", "sparsity": 0.5}, "structural": {"method": "structural"}}


def resnet50(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "resnet50.safetensors"
    save_file(torchvision.models.resnet50(weights=None).state_dict(), str(path))
    return path


def gpt2_small(folder: Path) -> Path:
    """GPT-2 small's shape (12 x 768, 12 heads) with the builders' small tokenizer, saved with save_pretrained."""
    tok = builders.tokenizer()
    cfg = transformers.GPT2Config(
        n_layer=12, n_embd=768, n_head=12, vocab_size=len(tok), n_positions=1024,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def archive(folder: Path) -> Path:
    return builders.archive(folder, folder.with_suffix(".tar"), "tar")


def one_run(model: Path, spec: dict[str, Any], out: Path, isolate: bool) -> tuple[float, float, dict[str, Any]]:
    job = JobSpec.model_validate({**spec, "kind": "dry_run"})
    started = time.perf_counter()
    report = run_job(JobInputs(model, job), out, isolate=isolate, threads=1).report
    wall = time.perf_counter() - started
    assert report.dry_run is not None
    return wall, report.dry_run.seconds, report.dry_run.model_dump()


def case(name: str, model: Path, spec: dict[str, Any], repeats: int, tmp: Path) -> dict[str, Any]:
    walls, engine, sandboxed = [], [], []
    dry: dict[str, Any] = {}
    for i in range(repeats):
        wall, seconds, dry = one_run(model, spec, tmp / f"{name}-{i}", isolate=False)
        walls.append(wall)
        engine.append(seconds)
        sandboxed.append(one_run(model, spec, tmp / f"{name}-{i}-sandbox", isolate=True)[0])
    est = dry.get("expected") or {}
    row = {
        "case": name,
        "engine": statistics.median(engine),
        "run_job": statistics.median(walls),
        "sandboxed": statistics.median(sandboxed),
        "layers": len(dry["prunable"]),
        "params": f"{human_count(est.get('params_before'))} -> {human_count(est.get('params_after'))}" if est else "-",
        "problems": ", ".join(p["code"] for p in dry["problems"]) or "none",
    }
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dry-run-") as name:
        tmp = Path(name)
        r50 = resnet50(tmp)
        for method, pruning in METHODS.items():
            rows.append(case(f"resnet50 {method}", r50, {"model": RESNET, "pruning": pruning}, args.repeats, tmp))
        for label, build in (("gpt2 2x32 (tests)", builders.gpt2), ("gpt2 12x768", gpt2_small)):
            ckpt = archive(build(tmp / label.split()[1].replace("x", "_")))
            for method, pruning in METHODS.items():
                rows.append(case(f"{label} {method}", ckpt, {"pruning": pruning}, args.repeats, tmp))
    lines = [
        f"Machine: {platform.platform()}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, 1 torch thread, median of {args.repeats}.",
        "",
        "| case | engine s | run_job s | sandboxed s | prunable layers | params (expected) | problems |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    lines += [
        f"| {r['case']} | {r['engine']:.2f} | {r['run_job']:.2f} | {r['sandboxed']:.2f} | {r['layers']} | "
        f"{r['params']} | {r['problems']} |"
        for r in rows
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
