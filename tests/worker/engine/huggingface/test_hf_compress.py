"""Hugging Face checkpoints through a compress job (issue 10): in as an archive, out as the same kind of archive.

Each artifact is loaded with plain transformers (AutoModelFor<Task>.from_pretrained) and re-evaluated
independently; the report's metric must equal that re-evaluation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from prunekit.reporting.html import render_report_html
from prunekit.reporting.markdown import render_markdown
from prunekit.spec import JobSpec
from prunekit.spec.report import Report
from tests.worker.engine.huggingface import builders
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import InvalidDataError, UnsupportedError


def _spec(extra: dict[str, Any] | None = None, epochs: int = 1) -> JobSpec:
    return JobSpec.model_validate(
        {
            "pruning": {"method": "magnitude", "sparsity": 0.5},
            "finetune": {"epochs": epochs, "batch_size": 8},
            "data": {"seq_len": builders.SEQ},
            "evaluation": {"batch_size": 16, "latency": {"repeats": 3, "warmup": 1}},
            **(extra or {}),
        }
    )


def _run(spec: JobSpec, model: Path, data: Path | None, out: Path, isolate: bool = False) -> Report:
    outputs = run_job(JobInputs(spec=spec, model_path=model, data_path=data), out, isolate=isolate)
    return Report.model_validate_json(outputs.report_path.read_text())


def _val_blocks(folder: Path, texts: Path, seq: int, val_fraction: float = 0.2, seed: int = 0) -> torch.Tensor:
    """The validation blocks as the spec defines them: texts + end token, packed, seeded split of blocks."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    ids: list[int] = []
    for line in texts.read_text().splitlines():
        ids += tok(json.loads(line)["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(ids) // seq
    blocks = torch.tensor(ids[: n * seq]).view(n, seq)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return blocks[perm[: max(1, round(n * val_fraction))]]


def _hf_perplexity(model: transformers.PreTrainedModel, blocks: torch.Tensor) -> float:
    """Token-weighted perplexity from transformers' own loss (labels=input_ids shifts inside the model)."""
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in blocks.split(16):
            loss = model(input_ids=batch, labels=batch).loss
            count = batch.shape[0] * (batch.shape[1] - 1)
            total, tokens = total + float(loss) * count, tokens + count
    return math.exp(total / tokens)


def test_causal_lm_archive_round_trip_in_the_sandbox(gpt2_archive: Path, lm_text: Path, tmp_path: Path) -> None:
    spec = _spec({"finetune": {"epochs": 1, "batch_size": 8, "regularizers": {"distillation": {"alpha": 0.5}}}})
    report = _run(spec, gpt2_archive, lm_text, tmp_path / "out", isolate=True)
    assert report.input_format == report.output_format == "huggingface"
    assert report.artifact_name == "model.tar.gz"
    folder = builders.extract(tmp_path / "out" / "model.tar.gz", tmp_path / "unpacked")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert model.dtype == torch.float32
    params = dict(model.named_parameters())
    pruned = [layer for layer in report.sparsity.layers if layer.pruned]
    assert pruned and report.sparsity.global_sparsity == pytest.approx(0.5, abs=0.01)
    for layer in pruned:  # the zeros the report counts are exact zeros in the file plain transformers loads
        assert int((params[layer.name] == 0).sum()) == layer.zeros
    after = report.after
    assert after is not None and after.val.perplexity is not None and after.val.tokens
    blocks = _val_blocks(folder, lm_text, builders.SEQ)
    assert after.val.tokens == blocks.numel() - len(blocks)
    assert _hf_perplexity(model, blocks) == pytest.approx(after.val.perplexity, rel=1e-4)
    assert report.before is not None and report.before.val.perplexity is not None
    assert after.loss_gap is not None
    assert report.latency_after is not None and report.latency_after.sequence_length == builders.SEQ
    assert report.latency_after.tokens_per_s and report.latency_after.tokens_per_s > 0
    rendered = render_markdown(report.model_dump(mode="json"))
    assert "Validation perplexity" in rendered and "Tokens per second" in rendered
    assert f"{after.val.perplexity:.2f}" in render_report_html(report.model_dump(mode="json"))


def test_perplexity_gate_holds_for_what_is_delivered(gpt2_archive: Path, lm_text: Path, tmp_path: Path) -> None:
    spec = _spec({"gates": {"max_perplexity_increase": 0.0}}, epochs=0)
    report = _run(spec, gpt2_archive, lm_text, tmp_path / "out")
    (gate,) = report.gates
    assert gate.name == "max_perplexity_increase" and gate.value is not None
    assert gate.passed == (gate.value <= 0.0)


def test_sequence_classifier_zip_with_labelled_text(tmp_path: Path) -> None:
    folder = builders.bert_classifier(tmp_path / "tiny-bert")
    model_zip = builders.archive(folder, tmp_path / "bert.zip", "zip")
    texts = builders.text_jsonl(tmp_path / "labelled.jsonl", labels=True)
    report = _run(_spec(), model_zip, texts, tmp_path / "out")
    assert report.artifact_name == "model.zip"
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(
        builders.extract(tmp_path / "out" / "model.zip", tmp_path / "unpacked")
    )
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    rows = [json.loads(line) for line in texts.read_text().splitlines()]
    enc = tok([r["text"] for r in rows], truncation=True, max_length=builders.SEQ, padding="max_length",
              return_tensors="pt")  # fmt: skip
    labels = torch.tensor([r["label"] for r in rows])
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    val = perm[: max(1, round(len(rows) * 0.2))]
    with torch.no_grad():
        logits = loaded(input_ids=enc["input_ids"][val], attention_mask=enc["attention_mask"][val]).logits
    accuracy = float((logits.argmax(1) == labels[val]).float().mean())
    assert report.after is not None and report.after.val.accuracy == pytest.approx(accuracy)


def test_image_classifier_on_pixel_arrays(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:300, None] / 16.0).astype(np.float32)
    np.savez(tmp_path / "digits.npz", x_train=x, y_train=digits.target[:300])
    model = builders.archive(builders.vit_classifier(tmp_path / "tiny-vit"), tmp_path / "vit.tar", "tar")
    spec = _spec({"model": {"inputs": [{"name": "pixel_values", "shape": [1, 8, 8]}]}})
    report = _run(spec, model, tmp_path / "digits.npz", tmp_path / "out")
    assert report.artifact_name == "model.tar"
    loaded = transformers.AutoModelForImageClassification.from_pretrained(
        builders.extract(tmp_path / "out" / "model.tar", tmp_path / "unpacked")
    )
    assert report.after is not None and report.after.val.accuracy is not None
    assert loaded.config.num_labels == 10


def test_feature_extraction_reports_output_fidelity(tmp_path: Path) -> None:
    model = builders.archive(builders.bert_encoder(tmp_path / "tiny-encoder"), tmp_path / "encoder.tar.gz")
    ids = np.random.default_rng(0).integers(0, 300, (40, builders.SEQ), dtype=np.int64)
    np.savez(tmp_path / "ids.npz", x=ids)
    spec = _spec({"model": {"inputs": [{"name": "input_ids", "shape": [builders.SEQ], "dtype": "int64"}]}})
    report = _run(spec, model, tmp_path / "ids.npz", tmp_path / "out")
    assert any("MSE distillation" in n for n in report.notes)
    assert report.history and report.history[0].val_loss is not None  # MSE to the original's pooled outputs
    assert report.fidelity is not None and report.fidelity.cosine_similarity is not None
    original = transformers.AutoModel.from_pretrained(tmp_path / "tiny-encoder").eval()
    pruned = transformers.AutoModel.from_pretrained(builders.extract(tmp_path / "out" / "model.tar.gz", tmp_path / "u"))
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
    val = torch.from_numpy(ids)[perm[: round(len(ids) * 0.2)]]
    with torch.no_grad():
        before = original(input_ids=val).last_hidden_state.mean(dim=1)
        after = pruned.eval()(input_ids=val).last_hidden_state.mean(dim=1)
    cosine = float(torch.nn.functional.cosine_similarity(before, after, dim=1).mean())
    assert cosine == pytest.approx(report.fidelity.cosine_similarity, abs=1e-5)
    assert float((after - before).norm() / before.norm()) == pytest.approx(report.fidelity.relative_error, rel=1e-4)


def test_checkpoint_without_data_uses_inputs_from_its_config(gpt2_archive: Path, tmp_path: Path) -> None:
    report = _run(_spec(epochs=0), gpt2_archive, None, tmp_path / "out")
    assert report.latency_after is not None and report.size_after.flops_dense > 0


def test_text_data_without_a_tokenizer_is_invalid_data(tmp_path: Path, lm_text: Path) -> None:
    folder = builders.gpt2(tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(InvalidDataError, match="tokenizer"):
        _run(_spec(), builders.archive(folder, tmp_path / "m.tar.gz"), lm_text, tmp_path / "out")


class _LogitsOnly(torch.nn.Module):
    """A GPT-2 that returns its logits tensor, so it can be traced to TorchScript."""

    def __init__(self, model: transformers.PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits


def test_causal_lm_task_on_a_torchscript_model_with_token_arrays(tmp_path: Path) -> None:
    hf = transformers.AutoModelForCausalLM.from_pretrained(builders.gpt2(tmp_path / "gpt2")).eval()
    hf.config.use_cache = False
    ids = np.random.default_rng(0).integers(0, hf.config.vocab_size, (40, builders.SEQ), dtype=np.int64)
    traced = torch.jit.trace(_LogitsOnly(hf), torch.from_numpy(ids[:2]), strict=False)
    torch.jit.save(traced, str(tmp_path / "lm.pt"))
    np.savez(tmp_path / "ids.npz", x=ids)  # unlabelled: the targets are the next tokens
    spec = _spec({"model": {"task": "causal_lm"}}, epochs=1)
    report = _run(spec, tmp_path / "lm.pt", tmp_path / "ids.npz", tmp_path / "out")
    assert report.after is not None and report.after.val.perplexity is not None
    loaded = torch.jit.load(str(tmp_path / "out" / "model.pt"))
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
    val = torch.from_numpy(ids)[perm[: round(len(ids) * 0.2)]]  # the spec's seeded split
    with torch.no_grad():
        logits = loaded(val)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), val[:, 1:].reshape(-1))
    assert math.exp(float(loss)) == pytest.approx(report.after.val.perplexity, rel=1e-4)
    assert report.history and report.history[0].train_loss is not None  # trained on the next-token loss


def test_structural_pruning_of_a_checkpoint_is_refused_up_front(gpt2_archive: Path, tmp_path: Path) -> None:
    spec = JobSpec.model_validate({"pruning": {"method": "structural", "channel_sparsity": 0.3}})
    with pytest.raises(UnsupportedError, match="use method 'transformer_structural'"):
        _run(spec, gpt2_archive, None, tmp_path / "out")


def test_bfloat16_checkpoint_stays_bfloat16(tmp_path: Path, lm_text: Path) -> None:
    folder = builders.gpt2(tmp_path / "bf16")
    transformers.AutoModelForCausalLM.from_pretrained(folder).to(torch.bfloat16).save_pretrained(folder)
    report = _run(_spec(epochs=1), builders.archive(folder, tmp_path / "bf16.tar.gz"), lm_text, tmp_path / "out")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        builders.extract(tmp_path / "out" / "model.tar.gz", tmp_path / "u"), dtype="auto"
    )
    assert loaded.dtype == torch.bfloat16
    assert report.after is not None and report.after.val.perplexity is not None
