"""Fixtures: small Hugging Face checkpoints archived as users upload them (built once per module)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.worker.engine.huggingface import builders


@pytest.fixture(scope="module")
def gpt2_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("gpt2")
    return builders.archive(builders.gpt2(base / "tiny-gpt2"), base / "tiny-gpt2.tar.gz")


@pytest.fixture(scope="module")
def lm_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builders.text_jsonl(tmp_path_factory.mktemp("text") / "train.jsonl")
