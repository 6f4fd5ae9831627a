"""A model that does not fit the device's memory (issue 13): its blocks stay in host memory and are streamed in
one at a time; one-shot pruning and evaluation give the same result as with the whole model on the device.

No GPU here: the device is the CPU, and `device_memory_gib` makes the job treat the model as too large, so the
streaming path (placement, hooks, pinned calibration, masks moved home) runs for real; which memory it saves on a
GPU is not measured here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from torch import nn

from prunekit.spec import JobSpec
from prunekit.spec.report import DryRunProblemCode, Report
from tests.worker.engine.huggingface import builders
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import ResourceLimitError
from worker.engine.job_state import JobState
from worker.engine.models.offload import GIB, place, resident, stream_blocks, weight_bytes
from worker.engine.progress import StageProgress


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builders.gpt2(tmp_path_factory.mktemp("gpt2") / "tiny-gpt2")


def _sizes(folder: Path) -> tuple[int, int, int]:
    """Bytes of the whole model, of what lies outside its blocks, and of its largest block."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    blocks = model.transformer.h
    return weight_bytes(model), weight_bytes(model) - weight_bytes(blocks), max(weight_bytes(b) for b in blocks)


def _streaming_budget_gib(folder: Path) -> float:
    """A device memory the model does not fit twice over, but its resting part twice and one block do."""
    whole, rest, block = _sizes(folder)
    budget = 2 * rest + block + 1024
    assert budget < 2 * whole
    return budget / GIB


def _spec(device_memory_gib: float | None, **extra: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "pruning": {"method": "sparsegpt", "sparsity": 0.5},
            "finetune": {"epochs": 0, "batch_size": 8},
            "data": {"seq_len": builders.SEQ, "calibration_samples": 16},
            "evaluation": {"batch_size": 16, "latency": {"repeats": 3, "warmup": 1}},
            "device_memory_gib": device_memory_gib,
            **extra,
        }
    )


def _run(spec: JobSpec, model: Path, data: Path, out: Path) -> Report:
    outputs = run_job(JobInputs(spec=spec, model_path=model, data_path=data), out, isolate=False)
    return Report.model_validate_json(outputs.report_path.read_text())


def _weights(out: Path, dest: Path) -> dict[str, torch.Tensor]:
    folder = builders.extract(out / "model.tar.gz", dest)
    return transformers.AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_streamed_sparsegpt_job_equals_the_whole_model_job(
    gpt2_folder: Path, gpt2_archive: Path, lm_text: Path, tmp_path: Path
) -> None:
    whole = _run(_spec(None), gpt2_archive, lm_text, tmp_path / "whole")
    streamed = _run(_spec(_streaming_budget_gib(gpt2_folder)), gpt2_archive, lm_text, tmp_path / "streamed")
    assert not any("host memory" in n for n in whole.notes)
    assert any("2 blocks of 'transformer.h' stay in host memory" in n for n in streamed.notes)
    assert any("pruned block by block" in n for n in streamed.notes)
    for report in (whole, streamed):
        assert report.before is not None and report.after is not None
    assert streamed.before.val.perplexity == pytest.approx(whole.before.val.perplexity, rel=1e-5)  # type: ignore[union-attr]
    assert streamed.after.val.perplexity == pytest.approx(whole.after.val.perplexity, rel=1e-5)  # type: ignore[union-attr]
    assert streamed.sparsity.global_sparsity == pytest.approx(0.5)
    a, b = _weights(tmp_path / "whole", tmp_path / "a"), _weights(tmp_path / "streamed", tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:  # the same weights kept, and SparseGPT's updates to them the same
        assert torch.equal(a[name] == 0, b[name] == 0), name
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"finetune": {"epochs": 1, "batch_size": 8}}, "fine-tuning"),
        ({"pruning": {"method": "structural", "channel_sparsity": 0.5}}, "pruning method 'structural'"),
    ],
)
def test_streaming_refuses_what_needs_the_whole_model(
    extra: dict[str, Any], named: str, gpt2_folder: Path, gpt2_archive: Path, lm_text: Path, tmp_path: Path
) -> None:
    with pytest.raises(ResourceLimitError, match=f"stay in host memory.*asks for {named}"):
        _run(_spec(_streaming_budget_gib(gpt2_folder), **extra), gpt2_archive, lm_text, tmp_path / "out")


def test_a_model_too_large_even_block_by_block_is_refused(
    gpt2_folder: Path, gpt2_archive: Path, lm_text: Path, tmp_path: Path
) -> None:
    _whole, rest, _block = _sizes(gpt2_folder)
    with pytest.raises(ResourceLimitError, match="even one block at a time"):
        _run(_spec(2 * rest / GIB), gpt2_archive, lm_text, tmp_path / "out")


class _Moves:
    """Which block each Module.to call moved, and where (a spy on the copies a GPU would make)."""

    def __init__(self, blocks: nn.ModuleList, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[tuple[int, str]] = []
        index = {id(b): i for i, b in enumerate(blocks)}
        original = nn.Module.to

        def to(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
            if id(module) in index:
                self.log.append((index[id(module)], str(args[0] if args else kwargs.get("device"))))
            return original(module, *args, **kwargs)

        monkeypatch.setattr(nn.Module, "to", to)


def test_each_block_is_copied_in_for_its_forward_and_back_after(
    gpt2_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(gpt2_folder).eval()
    ids = torch.randint(0, 300, (2, builders.SEQ))
    with torch.no_grad():
        expected = model(ids).logits
    offload = stream_blocks(model, torch.device("cpu"), budget=10 * weight_bytes(model))
    assert (offload.path, offload.blocks) == ("transformer.h", 2)
    moves = _Moves(model.transformer.h, monkeypatch)
    with torch.no_grad():
        got = model(ids).logits
    assert torch.equal(got, expected)
    assert moves.log == [(0, "cpu"), (0, "cpu"), (1, "cpu"), (1, "cpu")]  # in, out; in, out: one block at a time
    moves.log.clear()
    with torch.no_grad(), resident(model.transformer.h[1]):  # calibration holds a block for its many calls
        model(ids)
        model(ids)
    # pinned: in once and out once, each call's pre-hook a no-op check, no post-hook move
    assert [i for i, _ in moves.log].count(1) == 1 + 2 + 1


def test_a_model_that_fits_twice_is_placed_whole(gpt2_folder: Path) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(gpt2_folder)
    assert place(model, torch.device("cpu"), budget=2 * weight_bytes(model)) is None
    assert not model.transformer.h[0]._forward_pre_hooks


@pytest.mark.parametrize("epochs", [0, 1])
def test_dry_run_says_the_model_would_stream_and_what_that_refuses(
    epochs: int, gpt2_folder: Path, gpt2_archive: Path, lm_text: Path, tmp_path: Path
) -> None:
    spec = _spec(_streaming_budget_gib(gpt2_folder), kind="dry_run", finetune={"epochs": epochs, "batch_size": 8})
    report = _run(spec, gpt2_archive, lm_text, tmp_path / "out")
    assert report.dry_run is not None
    problems = [p for p in report.dry_run.problems if p.code == DryRunProblemCode.DEVICE_MEMORY]
    assert any("stay in host memory" in n for n in report.notes)
    if epochs:
        assert len(problems) == 1 and "asks for fine-tuning" in problems[0].message
    else:
        assert not problems and report.dry_run.forward_ok and report.dry_run.prunable


def test_the_placement_is_decided_once_on_the_jobs_model(gpt2_folder: Path, tmp_path: Path) -> None:
    """On a GPU the free memory shrinks once the model and its original are there: the reloaded artifact must not
    then be streamed (and a fine-tuned job refused at its end) because of the job's own copies."""
    upload = transformers.AutoModelForCausalLM.from_pretrained(gpt2_folder)
    spec = _spec(2 * weight_bytes(upload) / GIB, finetune={"epochs": 1, "batch_size": 8})  # fits exactly twice
    state = JobState(spec, tmp_path, tmp_path, StageProgress(), torch.device("cpu"))
    state.place(upload)
    larger = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**upload.config.to_dict(), "n_layer": 4}))
    state.place(larger)  # would not fit this budget by itself
    assert state.offload is None and not state.notes
    assert not upload.transformer.h[0]._forward_pre_hooks and not larger.transformer.h[0]._forward_pre_hooks
