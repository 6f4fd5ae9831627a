"""One-shot LLM pruning: magnitude vs Wanda vs SparseGPT on a small GPT-2 trained here on English text (issue 13).

Reuses bench_lm_pruning.py's corpus, tokenizer and cached dense checkpoint (it trains one on the first run).
Every method runs as a prunekit compress job without fine-tuning, on the block weights only (embeddings and
the tied LM head stay dense), at 50% and 70% unstructured (the same share in every output row for Wanda and
SparseGPT; per layer for magnitude) and 2:4. Each artifact is re-evaluated with plain transformers.

With --llmcompressor PYTHON, llmcompressor's own SparseGPT and Wanda (oneshot, run by llmcompressor_oneshot.py
under that python, which has llmcompressor) prune the same dense checkpoint on the same calibration blocks (the
first data.calibration_samples training blocks, as the engine takes them), evaluated with the same hf_perplexity.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_llm_oneshot.py [--quick] [--llmcompressor PYTHON]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lm_pruning import QUICK, Setup, _now, engine_split, extract, hf_perplexity, packed_blocks, prepare

from prunekit.spec import JobSpec
from prunekit.spec.report import Report
from worker.engine.api import JobInputs, run_job

EXCLUDE = ["transformer.wte.*", "transformer.wpe.*"]
PATTERNS: dict[str, dict[str, Any]] = {
    "50%": {"sparsity": 0.5},
    "70%": {"sparsity": 0.7},
    "2:4": {"pattern": "n:m", "n": 2, "m": 4},
}


def pruning(method: str, pattern: str) -> dict[str, Any]:
    """The spec's pruning section for one method and pattern."""
    shape = PATTERNS[pattern]
    if method == "magnitude":
        if pattern == "2:4":
            return {"method": "nm", "n": 2, "m": 4, "exclude": EXCLUDE}
        return {"method": "magnitude", "scope": "layerwise", "sparsity": shape["sparsity"], "exclude": EXCLUDE}
    return {"method": method, **shape, "exclude": EXCLUDE}


def run(prep: Any, setup: Setup, method: str, pattern: str, calibration: int, tmp: Path) -> dict[str, Any]:
    """One job; the report's validation perplexity must equal transformers' own on the artifact."""
    spec = JobSpec.model_validate(
        {
            "pruning": pruning(method, pattern),
            "finetune": {"epochs": 0},
            "data": {"seq_len": setup.seq_len, "calibration_samples": calibration},
            "evaluation": {"batch_size": 64, "latency": {"repeats": 3, "warmup": 1}},
        }
    )
    started = time.perf_counter()
    outputs = run_job(JobInputs(prep.archive, spec, prep.train_jsonl), tmp / f"{method}-{pattern}", isolate=False)
    seconds = time.perf_counter() - started
    report = Report.model_validate_json(outputs.report_path.read_text())
    assert report.before is not None and report.after is not None and outputs.artifact_path is not None
    after = report.after.val.perplexity
    hf = hf_perplexity(extract(outputs.artifact_path, tmp / f"{method}-{pattern}-u"), prep.val_blocks)
    if after is None or not math.isclose(hf, after, rel_tol=1e-4):
        raise SystemExit(f"{method} {pattern}: report perplexity {after} != transformers' {hf}")
    return {"dense": report.before.val.perplexity, "after": after, "sparsity": report.sparsity.global_sparsity,
            "seconds": seconds, "prune_seconds": report.stage_seconds.get("prune", math.nan)}  # fmt: skip


def calibration_blocks(prep: Any, setup: Setup, count: int) -> torch.Tensor:
    """The engine's calibration rows: the first `count` blocks of its seeded training split."""
    tok = transformers.AutoTokenizer.from_pretrained(prep.dense_dir)
    train, _ = engine_split(packed_blocks(tok, prep.train_jsonl, setup.seq_len))
    return train[:count].clone()


def run_llmcompressor(
    python: str, prep: Any, blocks: Path, method: str, pattern: str, tmp: Path, linear: bool = True
) -> dict[str, Any]:
    """llmcompressor's oneshot in a subprocess; its checkpoint evaluated with the same hf_perplexity."""
    out = tmp / f"llmc-{method}-{pattern}-{'linear' if linear else 'conv1d'}"
    script = Path(__file__).resolve().parent / "llmcompressor_oneshot.py"
    command = [python, str(script), "--model", str(prep.dense_dir), "--blocks", str(blocks),
               "--method", method, "--pattern", pattern, "--out", str(out)] + ["--linear"] * linear  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"llmcompressor {method} {pattern} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall": wall, "after": hf_perplexity(out, prep.val_blocks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick setup of bench_lm_pruning (2 layers)")
    parser.add_argument("--calibration", type=int, default=128, help="data.calibration_samples")
    parser.add_argument("--llmcompressor", metavar="PYTHON", help="also run llmcompressor's SparseGPT / Wanda")
    args = parser.parse_args()
    torch.set_num_threads(1)
    setup = QUICK if args.quick else Setup()
    prep = prepare(setup)
    methods = ["magnitude", "wanda", "sparsegpt"]
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-oneshot-") as tmp:
        for pattern in PATTERNS:
            for method in methods:
                results[method, pattern] = run(prep, setup, method, pattern, args.calibration, Path(tmp))
                print(f"{method} {pattern}: {results[method, pattern]}", file=sys.stderr)
        if args.llmcompressor:
            blocks = Path(tmp) / "calibration.pt"
            torch.save(calibration_blocks(prep, setup, args.calibration), blocks)
            for pattern in PATTERNS:
                for method in ("sparsegpt", "wanda"):
                    found = run_llmcompressor(args.llmcompressor, prep, blocks, method, pattern, Path(tmp))
                    results[f"llmc-{method}", pattern] = found
                    print(f"llmcompressor {method} {pattern}: {found}", file=sys.stderr)
            # GPT-2's own Conv1D layers, not swapped: llmcompressor does not target them.
            as_is = run_llmcompressor(args.llmcompressor, prep, blocks, "sparsegpt", "50%", Path(tmp), linear=False)
            print(f"llmcompressor sparsegpt 50% on the unswapped Conv1D model: {as_is}", file=sys.stderr)
    dense = next(iter(results.values()))["dense"]
    lines = [
        f"Dense validation perplexity {dense:.2f} ({prep.info['params']:,} parameters, seq_len {setup.seq_len}, "
        f"{args.calibration} calibration blocks); {_now()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, 1 thread.",
        "",
        "| pattern | magnitude | Wanda | SparseGPT | SparseGPT increase / magnitude's | seconds (mag, Wanda, SGPT) |",
        "|---|---|---|---|---|---|",
    ]
    for pattern in PATTERNS:
        mag, wanda, sgpt = (results[m, pattern] for m in methods)
        ratio = (sgpt["after"] - dense) / (mag["after"] - dense) if mag["after"] > dense else float("nan")
        lines.append(
            f"| {pattern} | {mag['after']:.2f} | {wanda['after']:.2f} | {sgpt['after']:.2f} | {ratio:.2f}x | "
            f"{mag['seconds']:.0f}, {wanda['seconds']:.0f}, {sgpt['seconds']:.0f} |"
        )
    if args.llmcompressor:
        lines += [
            "",
            "| pattern | prunekit SparseGPT | llmcompressor SparseGPT | prunekit Wanda | llmcompressor Wanda | "
            "llmcompressor block sparsity (SGPT, Wanda) | s: prunekit prune stage (SGPT, Wanda) "
            "| s: llmcompressor oneshot call (subprocess) (SGPT, Wanda) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for pattern in PATTERNS:
            sgpt, wanda = results["sparsegpt", pattern], results["wanda", pattern]
            lsgpt, lwanda = results["llmc-sparsegpt", pattern], results["llmc-wanda", pattern]
            lines.append(
                f"| {pattern} | {sgpt['after']:.2f} | {lsgpt['after']:.2f} | {wanda['after']:.2f} | "
                f"{lwanda['after']:.2f} | {lsgpt['sparsity']:.3f}, {lwanda['sparsity']:.3f} | "
                f"{sgpt['prune_seconds']:.1f}, {wanda['prune_seconds']:.1f} | "
                f"{lsgpt['seconds']:.1f} ({lsgpt['wall']:.0f}), {lwanda['seconds']:.1f} ({lwanda['wall']:.0f}) |"
            )
        lines += ["", f"llmcompressor SparseGPT 50% on GPT-2's own Conv1D layers (not swapped for nn.Linear): "
                  f"block sparsity {as_is['sparsity']:.3f}, perplexity {as_is['after']:.2f}."]  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
