"""Wanda and SparseGPT through a compress job (issue 13): calibrated on the rows of a .jsonl text upload, masks
enforced while fine-tuning, and the artifact re-evaluated independently with transformers' own loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from transformers.pytorch_utils import Conv1D

from prunekit.spec import JobSpec
from prunekit.spec.report import Report
from tests.worker.engine.huggingface import builders
from tests.worker.engine.huggingface.test_hf_compress import _hf_perplexity, _val_blocks
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import InvalidSpecError


def _spec(pruning: dict[str, Any], epochs: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "pruning": pruning,
            "finetune": {"epochs": epochs, "batch_size": 8},
            "data": {"seq_len": builders.SEQ, "calibration_samples": 16},
            "evaluation": {"batch_size": 16, "latency": {"repeats": 3, "warmup": 1}},
        }
    )


def _run(spec: JobSpec, model: Path, data: Path | None, out: Path) -> Report:
    outputs = run_job(JobInputs(spec=spec, model_path=model, data_path=data), out, isolate=False)
    return Report.model_validate_json(outputs.report_path.read_text())


def _rows(model: transformers.PreTrainedModel, name: str) -> torch.Tensor:
    """A weight as [outputs, inputs] (GPT-2's Conv1D stores [inputs, outputs])."""
    param = dict(model.named_parameters())[name].detach()
    module = model.get_submodule(name.rsplit(".", 1)[0])
    return param.t() if isinstance(module, Conv1D) else param.reshape(param.shape[0], -1)


@pytest.mark.parametrize(
    ("pruning", "epochs"),
    [({"method": "sparsegpt", "sparsity": 0.5}, 1), ({"method": "wanda", "pattern": "n:m", "n": 2, "m": 4}, 0)],
    ids=["sparsegpt-finetuned", "wanda-2:4"],
)
def test_calibrated_job_on_text_matches_an_independent_evaluation(
    pruning: dict[str, Any], epochs: int, gpt2_archive: Path, lm_text: Path, tmp_path: Path
) -> None:
    report = _run(_spec(pruning, epochs), gpt2_archive, lm_text, tmp_path / "out")
    folder = builders.extract(tmp_path / "out" / "model.tar.gz", tmp_path / "unpacked")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    pruned = [layer.name for layer in report.sparsity.layers if layer.pruned]
    assert len(pruned) >= 8 and report.sparsity.global_sparsity == pytest.approx(0.5)
    for name in pruned:  # every row of the delivered file holds the pattern, after fine-tuning too
        rows = _rows(model, name) == 0
        if pruning.get("pattern") == "n:m":
            assert torch.all(rows.reshape(rows.shape[0], -1, 4).sum(-1) == 2), name
        else:
            assert torch.all(rows.sum(1) == rows.shape[1] // 2), name
    after = report.after
    assert after is not None and after.val.perplexity is not None
    assert _hf_perplexity(model, _val_blocks(folder, lm_text, builders.SEQ)) == pytest.approx(
        after.val.perplexity, rel=1e-4
    )
    notes = " ".join(report.notes)
    assert f"{pruning['method']}: calibrated on 16 training rows" in notes
    assert "pruned block by block" in notes and "save no time without a sparse kernel" in notes


def test_calibrated_method_without_data_is_an_invalid_spec(gpt2_archive: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpecError, match="wanda needs calibration data"):
        _run(_spec({"method": "wanda"}, 0), gpt2_archive, None, tmp_path / "out")
