"""SparseGPT through the real service (issue 13): the client uploads a Hugging Face checkpoint folder with .jsonl
text, the worker calibrates on its rows in the sandbox, and the downloaded archive loads with plain transformers,
holds the pattern and gives the report's perplexity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
import yaml

from tests.integration.conftest import Stack
from tests.integration.test_huggingface_service import _perplexity, _val_blocks
from tests.worker.engine.huggingface import builders

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = {
    "pruning": {"method": "sparsegpt", "pattern": "n:m", "n": 2, "m": 4},
    "finetune": {"epochs": 0},
    "data": {"seq_len": builders.SEQ, "calibration_samples": 32},
    "evaluation": {"batch_size": 16, "latency": {"repeats": 3, "warmup": 1}},
    "gates": {"min_sparsity": 0.45},
}


def test_sparsegpt_job_with_text_calibration_round_trips(live_server: Stack, tmp_path: Path) -> None:
    folder = builders.gpt2(tmp_path / "tiny-gpt2")
    texts = builders.text_jsonl(tmp_path / "train.jsonl")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "out"
    env = {**os.environ, "PRUNEKIT_SERVER": live_server.base_url, "PRUNEKIT_API_KEY": live_server.api_key}
    args = ["submit", str(folder), "--spec", str(spec), "--data", str(texts), "--wait", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "prunekit.cli.main", *args], env=env, capture_output=True, text=True, timeout=560
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "passed" and report["spec"]["pruning"]["method"] == "sparsegpt"
    assert any("sparsegpt: calibrated on 32 training rows" in n for n in report["notes"])
    unpacked = builders.extract(out / "model.tar", tmp_path / "unpacked")
    model = transformers.AutoModelForCausalLM.from_pretrained(unpacked)
    c_fc = model.transformer.h[0].mlp.c_fc.weight.detach().t()  # Conv1D: [in, out] -> rows are outputs
    assert bool(((c_fc == 0).reshape(c_fc.shape[0], -1, 4).sum(-1) == 2).all())
    assert _perplexity(model, _val_blocks(unpacked, texts)) == pytest.approx(report["after"]["val"]["perplexity"])
