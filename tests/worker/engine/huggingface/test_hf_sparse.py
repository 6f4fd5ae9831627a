"""A Hugging Face checkpoint with output.format sparse_state_dict: the weights only, restored into the upload."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

from prunekit.spec import JobSpec
from tests.worker.engine.huggingface import builders
from tests.worker.engine.models.test_sparse import assert_bit_identical
from tests.worker.engine.test_sparse_compress import load_sparse
from worker.engine.api import JobInputs, run_job


def _spec(fmt: str) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model": {"task": "causal_lm"},
            "pruning": {"method": "nm", "n": 2, "m": 4},
            "data": {"seq_len": builders.SEQ},
            "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
            "output": {"format": fmt},
        }
    )


def test_sparse_weights_load_into_the_uploaded_checkpoint(gpt2_archive: Path, tmp_path: Path) -> None:
    dense = run_job(JobInputs(gpt2_archive, _spec("same")), tmp_path / "dense", isolate=False).artifact_path
    sparse = run_job(JobInputs(gpt2_archive, _spec("sparse_state_dict")), tmp_path / "sp", isolate=False).artifact_path
    assert dense is not None and sparse is not None
    pruned = builders.extract(dense, tmp_path / "pruned")
    upload = builders.extract(gpt2_archive, tmp_path / "upload")
    # from_pretrained of the folder the user already has, with the downloaded weights: plain transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(upload)
    model.load_state_dict(load_sparse(sparse))
    want = load_file(str(pruned / "model.safetensors"))
    got = {k: v for k, v in model.state_dict().items() if k in want}
    assert_bit_identical(got, want)
    assert sparse.stat().st_size < 0.8 * (pruned / "model.safetensors").stat().st_size
    nm_weight = got["transformer.h.0.mlp.c_fc.weight"]
    assert torch.count_nonzero(nm_weight) == nm_weight.numel() // 2
