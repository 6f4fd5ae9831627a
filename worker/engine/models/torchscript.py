"""Reading untrusted TorchScript archives.

TorchScript code runs in the TorchScript interpreter, not Python, but it can still call `torch.save` (aten::save,
writes any file) and `torch.from_file` (reads any file). `__setstate__` methods even run while torch.jit.load
reads the archive. So we scan the archive's code before loading and the inlined forward graph after it. The scan
is a second line only: the sandbox's file-system confinement is what contains a model that slips past it.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch

from worker.engine.errors import InvalidModelError, UnsafeModelError
from worker.engine.models.formats import torch_archive_records

__all__ = ["check_torchscript_archive", "check_torchscript_module", "load_torchscript"]

_REFUSED = "nothing was run; remove it from the model or upload a state_dict"
# Identifiers of file-touching operators; a word match also catches them in strings and other spellings.
_DENIED_WORDS = re.compile(r"\b(save|from_file|load_tensor|_load_for_mobile|load_library)\b")
_MAX_CODE_BYTES = 64 * 1024 * 1024
_DENIED_KINDS = frozenset({"aten::save", "aten::from_file", "debugprims::load_tensor"})


def check_torchscript_archive(path: str | Path) -> None:
    """Refuse TorchScript archives that torch would read differently from us, or whose code touches files."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in torch_archive_records(zf):
                relative = info.filename.split("/", 1)[1]
                if relative.casefold().startswith("code/"):
                    _check_code_entry(zf, info, relative)
    except zipfile.BadZipFile as exc:
        raise InvalidModelError(f"could not read the TorchScript file (truncated or corrupt?): {exc}") from exc


def _check_code_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, relative: str) -> None:
    if info.file_size > _MAX_CODE_BYTES:
        raise UnsafeModelError(
            f"refused: the TorchScript code entry {relative} declares {info.file_size} bytes, more than any "
            f"model's code; {_REFUSED}"
        )
    with zf.open(info) as fh:  # bounded read: a lying size field cannot make us inflate more than the cap
        source = fh.read(_MAX_CODE_BYTES + 1).decode("utf-8", "replace")
    if found := _DENIED_WORDS.search(source):
        line = source[: found.start()].count("\n") + 1
        raise UnsafeModelError(
            f"refused: the TorchScript code calls '{found.group(1)}' ({relative}, line {line}), which "
            f"reads or writes files; {_REFUSED}"
        )


def check_torchscript_module(module: torch.jit.ScriptModule) -> None:
    """Refuse a loaded ScriptModule whose (inlined) forward graph calls a file-touching operator."""
    forward = getattr(module, "forward", None)
    graph = getattr(forward, "graph", None)
    if graph is None:
        return
    graph = graph.copy()
    torch._C._jit_pass_inline(graph)
    blocks = [graph.block()]
    while blocks:
        for node in blocks.pop().nodes():
            if node.kind() in _DENIED_KINDS:
                raise UnsafeModelError(f"refused: the TorchScript forward calls {node.kind()}; {_REFUSED}")
            blocks.extend(node.blocks())


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """Check, then torch.jit.load an untrusted TorchScript file on the CPU."""
    check_torchscript_archive(path)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError and plain Exceptions from its C++ reader
        text = str(exc).strip()
        first = text.splitlines()[0][:300] if text else type(exc).__name__
        raise InvalidModelError(f"could not load the TorchScript file (truncated or corrupt?): {first}") from exc
    check_torchscript_module(module)
    return module
