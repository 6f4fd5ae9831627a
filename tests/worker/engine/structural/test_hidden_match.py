"""Hidden-state distillation for transformer_structural recovery: kept blocks are paired with the original's."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import transformers

from prunekit.spec import JobSpec
from tests.worker.engine.huggingface import builders
from tests.worker.engine.structural.test_transformers import IDS, _gpt2, _prune, _run, _spec
from worker.engine.training.hidden_match import HiddenMatch


def _pair_losses(student: Any, teacher: Any, kept: list[int], hidden: list[int] | None) -> list[float]:
    match = HiddenMatch(list(student.transformer.h), list(teacher.transformer.h), kept, hidden, 1.0)
    with match.recording(), torch.no_grad():
        student(input_ids=IDS)
        teacher(input_ids=IDS)
        return [float(x) for x in match.pair_losses()]


def test_blocks_before_the_first_removed_one_match_the_original_exactly() -> None:
    teacher = _gpt2()
    student = copy.deepcopy(teacher)
    selection = _prune(student, "causal_lm", layers=0.5)
    kept = selection.kept_layers
    losses = _pair_losses(student, teacher, kept, selection.hidden)
    for i, loss in enumerate(losses):
        unchanged = kept[: i + 1] == list(range(i + 1))  # no block before it was removed: same input, same output
        assert (loss == 0.0) if unchanged else (loss > 1e-6), (kept, losses)


def test_an_unpruned_copy_has_zero_loss_and_hidden_dims_are_selected() -> None:
    teacher = _gpt2()
    assert _pair_losses(copy.deepcopy(teacher), teacher, [0, 1, 2, 3], None) == [0.0] * 4
    # Keeping only some hidden dims compares the student with those dims of the original, in order.
    match = HiddenMatch([torch.nn.Identity()], [torch.nn.Identity()], [0], [2, 0], 1.0)
    with match.recording():
        match._student[0](torch.tensor([[3.0, 1.0]]))
        match._teacher[0](torch.tensor([[1.0, 5.0, 3.0]]))
        assert float(match.pair_losses()[0]) == 0.0


def test_hidden_state_distillation_brings_block_outputs_closer_to_the_original(tmp_path: Path) -> None:
    archive = builders.archive(builders.gpt2(tmp_path / "gpt2"), tmp_path / "gpt2.tar.gz")
    texts = builders.text_jsonl(tmp_path / "train.jsonl")
    original = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "gpt2").eval()
    distances = {}
    for weight in (0.0, 5.0):
        fields = _spec({"mlp": 0.5, "layers": 0.5}, epochs=3).model_dump()
        fields["finetune"]["regularizers"]["distillation"] = {"alpha": 1.0, "hidden_states": weight}
        spec = JobSpec.model_validate(fields)
        out = tmp_path / f"out{weight}"
        report = _run(spec, archive, texts, out)
        section = report.transformer_structural
        assert section is not None and section.recovery is not None
        assert ("MSE of each kept block's output" in section.recovery) == (weight > 0)
        student = transformers.AutoModelForCausalLM.from_pretrained(builders.extract(out / "model.tar.gz", out / "u"))
        kept = [i for i in range(2) if i not in section.removed_layers]
        distances[weight] = sum(_pair_losses(student.eval(), original, kept, None))
    assert distances[5.0] < distances[0.0], distances
