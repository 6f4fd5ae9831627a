"""GPU check of streamed blocks (issue 13): a SparseGPT job with the whole model on the GPU against the same job
with `device_memory_gib` set so that the model's blocks stay in host memory and are copied in one at a time.

    python benchmarks/gpu_offload.py [--layers 12] [--width 768] [--device cuda] [--out DIR]

The model is a GPT-2 built from its config (random init, nothing downloaded) with the byte-level tokenizer the
tests train on English text shipped with Python; the data is the tests' .jsonl text. Per run: wall time, peak
GPU memory allocated (torch.cuda.max_memory_allocated; none on CPU), perplexity before/after; then whether
both artifacts hold the same masks. Prints one JSON object and writes it to DIR/gpu_offload.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prunekit.spec import JobSpec
from prunekit.spec.report import Report
from tests.worker.engine.huggingface import builders
from worker.engine.api import JobInputs, run_job
from worker.engine.models.offload import GIB, weight_bytes


def _checkpoint(folder: Path, layers: int, width: int) -> tuple[Path, float]:
    """A GPT-2 archive and the device memory (GiB) that makes the job stream its blocks."""
    tok = builders.tokenizer()
    cfg = transformers.GPT2Config(
        n_layer=layers, n_embd=width, n_head=max(1, width // 64), vocab_size=len(tok),
        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    rest = weight_bytes(model) - weight_bytes(model.transformer.h)
    budget = 2 * rest + 1.25 * max(weight_bytes(b) for b in model.transformer.h)  # the budget counts weights only
    return builders.archive(folder, folder.with_suffix(".tar.gz")), budget / GIB


def _run(archive: Path, data: Path, out: Path, device: str, memory_gib: float | None) -> tuple[dict[str, Any], Path]:
    spec = JobSpec.model_validate(
        {
            "pruning": {"method": "sparsegpt", "sparsity": 0.5},
            "finetune": {"epochs": 0},
            "data": {"seq_len": 128, "calibration_samples": 32},
            "evaluation": {"batch_size": 8, "latency": {"repeats": 5, "warmup": 2}},
            "device": device,
            "device_memory_gib": memory_gib,
        }
    )
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    outputs = run_job(JobInputs(spec=spec, model_path=archive, data_path=data), out, isolate=False)
    seconds = time.perf_counter() - started
    report = Report.model_validate_json(outputs.report_path.read_text())
    peak = torch.cuda.max_memory_allocated() / GIB if torch.cuda.is_available() else None
    row = {
        "device_memory_gib": memory_gib,
        "seconds": round(seconds, 1),
        "peak_gpu_gib": peak,
        "perplexity_before": report.before.val.perplexity if report.before else None,
        "perplexity_after": report.after.val.perplexity if report.after else None,
        "streamed": any("stay in host memory" in n for n in report.notes),
        "device": report.environment.device if report.environment else None,
    }
    return row, out / "model.tar.gz"


def _zeros(artifact: Path, dest: Path) -> dict[str, torch.Tensor]:
    folder = builders.extract(artifact, dest)
    return {k: v == 0 for k, v in transformers.AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpu-offload-") as tmp:
        folder = Path(tmp)
        archive, budget = _checkpoint(folder / "gpt2", args.layers, args.width)
        data = builders.text_jsonl(folder / "train.jsonl", n=400)
        whole, a = _run(archive, data, folder / "whole", args.device, None)
        streamed, b = _run(archive, data, folder / "streamed", args.device, budget)
        za, zb = _zeros(a, folder / "a"), _zeros(b, folder / "b")
        same = za.keys() == zb.keys() and all(torch.equal(za[k], zb[k]) for k in za)
    result = {"layers": args.layers, "width": args.width, "whole": whole, "streamed": streamed, "same_masks": same}
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_offload.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
