"""A Hugging Face checkpoint through the real service (issue 10): the client packs the folder, uploads it with text
data, the worker prunes and fine-tunes it in the sandbox, and the downloaded archive loads with plain transformers
and gives the report's perplexity."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
import yaml

from tests.integration.conftest import Stack
from tests.worker.engine.huggingface import builders

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = {
    "pruning": {"method": "magnitude", "sparsity": 0.5},
    "finetune": {"epochs": 1, "batch_size": 8},
    "data": {"seq_len": builders.SEQ},
    "evaluation": {"batch_size": 16, "latency": {"repeats": 3, "warmup": 1}},
    "gates": {"min_sparsity": 0.45},
}


def _perplexity(model: transformers.PreTrainedModel, blocks: torch.Tensor) -> float:
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in blocks.split(16):
            count = batch.shape[0] * (batch.shape[1] - 1)
            total += float(model(input_ids=batch, labels=batch).loss) * count
            tokens += count
    return math.exp(total / tokens)


def _val_blocks(folder: Path, texts: Path) -> torch.Tensor:
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    ids: list[int] = []
    for line in texts.read_text().splitlines():
        ids += tok(json.loads(line)["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(ids) // builders.SEQ
    blocks = torch.tensor(ids[: n * builders.SEQ]).view(n, builders.SEQ)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return blocks[perm[: round(n * 0.2)]]


def test_checkpoint_folder_submitted_by_the_client_round_trips(live_server: Stack, tmp_path: Path) -> None:
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
    assert report["input_format"] == "huggingface" and report["artifact_name"] == "model.tar"
    unpacked = builders.extract(out / "model.tar", tmp_path / "unpacked")
    model = transformers.AutoModelForCausalLM.from_pretrained(unpacked)
    assert _perplexity(model, _val_blocks(unpacked, texts)) == pytest.approx(report["after"]["val"]["perplexity"])


def _upload_and_run(stack: Stack, model: Path, data: Path | None, spec: dict[str, object]) -> tuple[dict, bytes]:  # type: ignore[type-arg]
    files = {"model": (model.name, model.read_bytes())}
    if data is not None:
        files["data"] = (data.name, data.read_bytes())
    with stack.client() as c:
        r = c.post("/v1/jobs", files=files, data={"spec": json.dumps(spec)})
        assert r.status_code == 202, r.text
        done = stack.wait(r.json()["id"], timeout=300)
        assert done["status"] == "succeeded", done
        report = c.get(done["links"]["report"]).json()
        artifact = c.get(done["links"]["artifact"]).content
    return report, artifact


def test_text_classifier_zip_through_the_api(live_server: Stack, tmp_path: Path) -> None:
    folder = builders.bert_classifier(tmp_path / "tiny-bert")
    texts = builders.text_jsonl(tmp_path / "labelled.jsonl", labels=True)
    report, artifact = _upload_and_run(live_server, builders.archive(folder, tmp_path / "bert.zip", "zip"), texts, SPEC)
    assert report["artifact_name"] == "model.zip"
    (tmp_path / "model.zip").write_bytes(artifact)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        builders.extract(tmp_path / "model.zip", tmp_path / "unpacked")
    ).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    rows = [json.loads(line) for line in texts.read_text().splitlines()]
    enc = tok([r["text"] for r in rows], truncation=True, max_length=builders.SEQ, padding="max_length",
              return_tensors="pt")  # fmt: skip
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    val = perm[: round(len(rows) * 0.2)]
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"][val], attention_mask=enc["attention_mask"][val]).logits
    labels = torch.tensor([r["label"] for r in rows])[val]
    assert float((logits.argmax(1) == labels).float().mean()) == pytest.approx(report["after"]["val"]["accuracy"])


def test_timm_state_dict_through_the_api(live_server: Stack, tmp_path: Path) -> None:
    import timm
    from safetensors.torch import load, save_file

    torch.manual_seed(0)
    save_file(timm.create_model("test_resnet", num_classes=10).state_dict(), str(tmp_path / "resnet.safetensors"))
    spec = {
        **SPEC,
        "model": {"architecture": "timm/test_resnet", "kwargs": {"num_classes": 10}, "input_shape": [3, 32, 32]},
    }
    report, artifact = _upload_and_run(live_server, tmp_path / "resnet.safetensors", None, spec)
    model = timm.create_model("test_resnet", num_classes=10)
    model.load_state_dict(load(artifact))
    zeros = sum(int((p == 0).sum()) for n, p in model.named_parameters() if n in _pruned(report))
    assert zeros == sum(layer["zeros"] for layer in report["sparsity"]["layers"] if layer["pruned"])


def _pruned(report: dict) -> set[str]:  # type: ignore[type-arg]
    return {layer["name"] for layer in report["sparsity"]["layers"] if layer["pruned"]}


def test_vit_on_an_image_folder_archive_through_the_api(live_server: Stack, tmp_path: Path) -> None:
    from tests.support.images import digit_folder, read_split, zip_folder

    pngs = digit_folder(tmp_path / "digits")
    model = builders.archive(builders.vit_classifier(tmp_path / "vit"), tmp_path / "vit.tar.gz")
    spec = {**SPEC, "finetune": {"epochs": 1, "batch_size": 32}}
    report, artifact = _upload_and_run(live_server, model, zip_folder(pngs, tmp_path / "digits.zip"), spec)
    (tmp_path / "model.tar.gz").write_bytes(artifact)
    hf = transformers.AutoModelForImageClassification.from_pretrained(
        builders.extract(tmp_path / "model.tar.gz", tmp_path / "unpacked")
    ).eval()
    x_val, y_val = read_split(pngs, "val")
    with torch.no_grad():
        predicted = hf(pixel_values=torch.from_numpy(x_val)).logits.argmax(1).numpy()
    assert report["after"]["val"]["accuracy"] == pytest.approx(float((predicted == y_val).mean()), abs=1e-9)


def test_sentence_embedding_model_through_the_api(live_server: Stack, tmp_path: Path) -> None:
    import numpy as np

    folder = builders.bert_encoder(tmp_path / "encoder")
    ids = np.random.default_rng(0).integers(0, 300, (40, builders.SEQ), dtype=np.int64)
    np.savez(tmp_path / "ids.npz", x=ids)
    spec = {**SPEC, "model": {"inputs": [{"name": "input_ids", "shape": [builders.SEQ], "dtype": "int64"}]}}
    report, artifact = _upload_and_run(
        live_server, builders.archive(folder, tmp_path / "e.tar.gz"), tmp_path / "ids.npz", spec
    )
    (tmp_path / "model.tar.gz").write_bytes(artifact)
    pruned = transformers.AutoModel.from_pretrained(builders.extract(tmp_path / "model.tar.gz", tmp_path / "u")).eval()
    original = transformers.AutoModel.from_pretrained(folder).eval()
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
    val = torch.from_numpy(ids)[perm[: round(len(ids) * 0.2)]]
    with torch.no_grad():
        before = original(input_ids=val).last_hidden_state.mean(dim=1)
        after = pruned(input_ids=val).last_hidden_state.mean(dim=1)
    cosine = float(torch.nn.functional.cosine_similarity(before, after, dim=1).mean())
    assert cosine == pytest.approx(report["fidelity"]["cosine_similarity"], abs=1e-5)
