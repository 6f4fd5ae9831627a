"""Hostile Hugging Face archives (issue 10): refused before anything is written outside the job or executed."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from prunekit.spec import ModelSpec
from tests.worker.engine.huggingface import builders
from worker.engine.errors import InvalidModelError, UnsafeModelError
from worker.engine.models.archives import ArchiveLimits, extract_archive
from worker.engine.models.loading import load_model

MiB = 1024 * 1024


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _config() -> tuple[tarfile.TarInfo, bytes]:
    return _file("model/config.json", json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}).encode())


@pytest.mark.parametrize("name", ["model/../../escaped.txt", "/tmp/prunekit-absolute-escape.txt", "..\\escaped.txt"])
def test_member_names_that_leave_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    archive = _tar(tmp_path / "evil.tar.gz", [_config(), _file(name, b"owned")])
    with pytest.raises(UnsafeModelError, match="refused"):
        load_model(archive, ModelSpec())
    assert not (tmp_path.parent / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/prunekit-absolute-escape.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_are_refused(tmp_path: Path, kind: bytes) -> None:
    link = tarfile.TarInfo("model/model.safetensors")
    link.type, link.linkname = kind, "/etc/passwd"
    archive = _tar(tmp_path / "link.tar.gz", [_config(), (link, b"")])
    with pytest.raises(UnsafeModelError, match="link"):
        load_model(archive, ModelSpec())


def test_zip_symlink_and_traversal_are_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("model/tokenizer.json")
    link.external_attr = 0o120777 << 16  # a symlink in the zip's unix mode bits
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr("model/config.json", "{}")
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(UnsafeModelError, match="link"):
        load_model(tmp_path / "link.zip", ModelSpec())
    with zipfile.ZipFile(tmp_path / "climb.zip", "w") as zf:
        zf.writestr("model/config.json", "{}")
        zf.writestr("../climbed.txt", "owned")
    with pytest.raises(UnsafeModelError, match="climbs out"):
        load_model(tmp_path / "climb.zip", ModelSpec())
    assert not (tmp_path.parent / "climbed.txt").exists()


def test_bomb_stops_at_the_inflated_byte_cap_and_leaves_nothing(tmp_path: Path) -> None:
    # 64 MiB of zeros in a ~64 KiB gzip: counted as inflated, not as declared.
    archive = _tar(tmp_path / "bomb.tar.gz", [_config(), _file("model/model.safetensors", bytes(64 * MiB))])
    assert archive.stat().st_size < MiB
    dest = tmp_path / "extracted"
    with pytest.raises(InvalidModelError, match="expands to more than"):
        extract_archive(archive, dest, ArchiveLimits(max_total_bytes=8 * MiB))
    assert not dest.exists()


def test_member_count_is_capped(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "many.tar.gz", [_file(f"model/f{i}.txt") for i in range(50)])
    with pytest.raises(InvalidModelError, match="more than 20 members"):
        extract_archive(archive, tmp_path / "dest", ArchiveLimits(max_members=20))


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/prunekit-hf-bin-pwned",))


def test_pickled_bin_with_code_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = Path("/tmp/prunekit-hf-bin-pwned")
    marker.unlink(missing_ok=True)
    folder = builders.gpt2(tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    torch.save({"transformer.wte.weight": _RunsCode()}, folder / "pytorch_model.bin")  # as an attacker would
    archive = builders.archive(folder, tmp_path / "bin.tar.gz")
    with pytest.raises(UnsafeModelError, match="unpickling would execute code"):
        load_model(archive, ModelSpec())
    assert not marker.exists()


def test_custom_code_configs_are_refused(tmp_path: Path) -> None:
    folder = builders.gpt2(tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("open('/tmp/prunekit-hf-remote-code', 'w').write('pwned')\n")
    with pytest.raises(UnsafeModelError, match="custom model code"):
        load_model(builders.archive(folder, tmp_path / "remote.tar.gz"), ModelSpec())
    assert not Path("/tmp/prunekit-hf-remote-code").exists()


def test_unknown_model_type_is_invalid_model(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "odd.tar.gz", [_file("model/config.json", b'{"model_type": "no-such-model"}')])
    with pytest.raises(InvalidModelError, match="transformers does not know"):
        load_model(archive, ModelSpec())
