"""transformer_structural on a small GPT-2 and a small BERT classifier: params, quality before/after recovery and
the measured speedup of the reloaded artifact against the MAC-proportional prediction (issue 13).

Both models are built from configs and briefly trained here on English text that ships with Python (pydoc
topics), so that pruning has something to lose. Each setting is a real compress job (archive in, archive out,
distillation recovery); its artifact is then reloaded with plain ``transformers`` and timed again here, in the
same process, interleaved with the original (batch 8, the sequence length below).

Run: python benchmarks/bench_transformer_structural.py [--steps 300] [--seq 128] [--repeats 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
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

SETTINGS: dict[str, dict[str, float]] = {
    "width 25%": {"attention_heads": 0.25, "hidden_size": 0.25, "mlp": 0.25},
    "width 50%": {"attention_heads": 0.5, "hidden_size": 0.5, "mlp": 0.5},
    "depth 25%": {"layers": 0.25},
}


def _texts(path: Path, labels: bool) -> Path:
    return builders.text_jsonl(path, n=len(builders.ENGLISH), labels=labels)


def _blocks(tok: Any, texts: Path, seq: int) -> torch.Tensor:
    ids: list[int] = []
    for line in texts.read_text().splitlines():
        ids += tok(json.loads(line)["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(ids) // seq
    return torch.tensor(ids[: n * seq]).view(n, seq)


def _train(model: Any, batches: list[dict[str, torch.Tensor]], steps: int, lr: float = 1e-3) -> None:
    """A short pre-training so the models are better than chance (AdamW)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        loss = model(**batches[step % len(batches)]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def build_gpt2(folder: Path, texts: Path, seq: int, steps: int) -> Path:
    """6 blocks, hidden 256, 8 heads, MLP 1024, 300-token vocabulary; trained on next-token prediction."""
    tok = builders.tokenizer()
    eos = tok.eos_token_id
    cfg = transformers.GPT2Config(n_layer=6, n_embd=256, n_head=8, n_inner=1024, vocab_size=len(tok),
                                  n_positions=seq, eos_token_id=eos, bos_token_id=eos)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    blocks = _blocks(tok, texts, seq)
    _train(model, [{"input_ids": b, "labels": b} for b in blocks.split(16)], steps)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return builders.archive(folder, folder.with_suffix(".tar.gz"))


def build_bert(folder: Path, texts: Path, seq: int, steps: int) -> Path:
    """6 blocks, hidden 256, 8 heads, MLP 1024; trained on the texts' labels (mentions 'function')."""
    tok = builders.tokenizer()
    cfg = transformers.BertConfig(vocab_size=len(tok), hidden_size=256, num_hidden_layers=6, num_attention_heads=8,
                                  intermediate_size=1024, max_position_embeddings=seq, num_labels=2,
                                  pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg)
    rows = [json.loads(line) for line in texts.read_text().splitlines()]
    enc = tok([r["text"] for r in rows], truncation=True, max_length=seq, padding="max_length", return_tensors="pt")
    labels = torch.tensor([r["label"] for r in rows])
    batches = [
        {"input_ids": i, "attention_mask": m, "labels": y}
        for i, m, y in zip(enc["input_ids"].split(16), enc["attention_mask"].split(16), labels.split(16), strict=True)
    ]
    _train(model, batches, steps, lr=1e-4)  # post-norm BERT does not train at 1e-3
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return builders.archive(folder, folder.with_suffix(".tar.gz"))


def _spec(ratios: dict[str, float], seq: int, repeats: int, threads: int, lr: float, hidden: float) -> JobSpec:
    distillation = {"hidden_states": hidden}  # the default KL on logits, plus block-output MSE when hidden > 0
    return JobSpec.model_validate(
        {
            "pruning": {"method": "transformer_structural", **ratios},
            "finetune": {
                "epochs": 1,
                "batch_size": 16,
                "optimizer": {"lr": lr},
                "regularizers": {"distillation": distillation},
            },
            "data": {"seq_len": seq, "calibration_samples": 64},
            "evaluation": {"batch_size": 32, "latency": {"batch_size": 8, "repeats": repeats, "threads": threads}},
            "device": "cpu",
        }
    )


@torch.inference_mode()
def independent_speedup(original: Any, pruned: Any, seq: int, repeats: int) -> tuple[float, float, float]:
    """(original ms, artifact ms, median of paired ratios): plain transformers models, batch 8, timed alternately."""
    ids = torch.randint(0, 300, (8, seq), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        original(input_ids=ids), pruned(input_ids=ids)
    a, b = [], []
    for _ in range(repeats):
        for model, out in ((original, a), (pruned, b)):
            start = time.perf_counter()
            model(input_ids=ids)
            out.append((time.perf_counter() - start) * 1000)
    return statistics.median(a), statistics.median(b), statistics.median(x / y for x, y in zip(a, b, strict=True))


def _quality(metrics: Any, causal: bool) -> str:
    if metrics is None:
        return "-"
    return f"{metrics.perplexity:.2f}" if causal else f"{metrics.accuracy:.3f}"


def run_setting(
    name: str, archive: Path, data: Path, args: argparse.Namespace, auto: Any, tmp: Path, hidden: float
) -> str:
    """One job; its report and an independent timing of the reloaded artifact, as a markdown table row."""
    out = tmp / (name.replace(" ", "_").replace("%", "") + f"-h{hidden:g}")
    started = time.perf_counter()
    lr = 1e-3 if auto is transformers.AutoModelForCausalLM else 1e-4  # as each was trained (BERT diverges at 1e-3)
    spec = _spec(SETTINGS[name], args.seq, args.repeats, args.threads, lr, hidden)
    outputs = run_job(JobInputs(spec=spec, model_path=archive, data_path=data), out, isolate=False)
    seconds = time.perf_counter() - started
    report = Report.model_validate_json(outputs.report_path.read_text())
    section, causal = report.transformer_structural, auto is transformers.AutoModelForCausalLM
    assert section is not None and report.before is not None and report.after is not None
    original = auto.from_pretrained(builders.extract(archive, tmp / f"{out.name}-orig")).eval()
    pruned = auto.from_pretrained(builders.extract(outputs.artifact_path, tmp / f"{out.name}-art")).eval()  # type: ignore[arg-type]
    before_ms, after_ms, ratio = independent_speedup(original, pruned, args.seq, args.repeats)
    macs = report.size_before.flops_dense / max(report.size_after.flops_dense, 1)
    tokens = report.latency_after.tokens_per_s if report.latency_after else None
    tokens_before = report.latency_before.tokens_per_s if report.latency_before else None
    label = f"{name} + hidden MSE {hidden:g}" if hidden else name
    return (
        f"| {label} | {section.params_before / 1e6:.2f}M → {section.params_after / 1e6:.2f}M | "
        f"{_quality(report.before.val, causal)} | {_quality(section.after_pruning, causal)} | "
        f"{_quality(report.after.val, causal)} | {macs:.2f}x | **{report.speedup:.2f}x** | "
        f"{before_ms:.1f} → {after_ms:.1f} ms, **{ratio:.2f}x** | {tokens_before:.0f} → {tokens:.0f} | "
        f"{seconds:.0f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300, help="pre-training steps of each model")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["gpt2", "bert"], choices=["gpt2", "bert"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--hidden-states", nargs="+", type=float, default=[0.0], help="distillation.hidden_states weights to run"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    header = (
        "| setting | params | {q} original | {q} pruned | {q} recovered | MAC reduction | speedup (report) | "
        "independent b8 | tokens/s (report) | job time |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    with tempfile.TemporaryDirectory(prefix="bench-ts-") as tmp_dir:
        tmp = Path(tmp_dir)
        lm_text, labelled = _texts(tmp / "lm.jsonl", False), _texts(tmp / "labelled.jsonl", True)
        models = {
            "gpt2": ("GPT-2 (causal LM, val perplexity)", build_gpt2, lm_text, transformers.AutoModelForCausalLM,
                     "perplexity"),
            "bert": ("BERT (sequence classifier, val accuracy)", build_bert, labelled,
                     transformers.AutoModelForSequenceClassification, "accuracy"),
        }  # fmt: skip
        for key in args.models:
            title, build, data, auto, quality = models[key]
            archive = build(tmp / key, data, args.seq, args.steps)
            print(f"\n### {title}\n\n" + header.format(q=quality), flush=True)
            for name in args.settings:
                for hidden in args.hidden_states:
                    row = run_setting(name, archive, data, args, auto, tmp / title.split()[0], hidden)
                    print(row, flush=True)


if __name__ == "__main__":
    main()
