"""Quantization after pruning on a Hugging Face causal LM: the delivered artifact loads with plain transformers (casts)
or plain torch (int8), and its perplexity is the report's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from tests.worker.engine.huggingface import builders
from tests.worker.engine.huggingface.test_hf_compress import _hf_perplexity, _run, _spec, _val_blocks
from worker.engine.errors import UnsupportedError


@pytest.mark.parametrize("method", ["bfloat16", "float16"])
def test_a_cast_checkpoint_loads_with_from_pretrained(
    method: str, gpt2_archive: Path, lm_text: Path, tmp_path: Path
) -> None:
    spec = _spec({"quantization": {"method": method}, "gates": {"max_perplexity_increase": 1000.0}})
    report = _run(spec, gpt2_archive, lm_text, tmp_path / "out")
    assert report.quantization is not None and report.artifact_name is not None
    assert [s.name for s in report.stages] == ["dense", "pruned", "fine_tuned", "quantized"]
    folder = builders.extract(tmp_path / "out" / report.artifact_name, tmp_path / "unpacked")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype="auto")  # plain transformers
    assert model.dtype == getattr(torch, method)
    fine_tuned, quantized = report.stages[2], report.stages[3]
    assert quantized.artifact_bytes is not None and fine_tuned.artifact_bytes is not None
    assert quantized.artifact_bytes < 0.75 * fine_tuned.artifact_bytes  # 2 bytes a weight instead of 4
    after = report.after
    assert after is not None and after.val.perplexity is not None and quantized.val == after.val
    blocks = _val_blocks(folder, lm_text, builders.SEQ)
    assert _hf_perplexity(model, blocks) == pytest.approx(after.val.perplexity, rel=1e-3)
    gate = next(g for g in report.gates if g.name == "max_perplexity_increase")
    assert report.before is not None and report.before.val.perplexity is not None
    assert gate.value == pytest.approx(after.val.perplexity / report.before.val.perplexity - 1)  # of the delivered


@pytest.mark.parametrize("method", ["int8_dynamic", "int8_weight_only"])
def test_int8_torchscript_of_a_checkpoint_is_refused_before_pruning(
    method: str, gpt2_archive: Path, lm_text: Path, tmp_path: Path
) -> None:
    # a transformers model traced at one shape fails at another, so its int8 TorchScript could not be delivered
    with pytest.raises(UnsupportedError, match="from_pretrained") as refused:
        _run(_spec({"quantization": {"method": method}}), gpt2_archive, lm_text, tmp_path / "out")
    assert "bfloat16" in refused.value.message
    assert not list((tmp_path / "out").glob("model*"))
