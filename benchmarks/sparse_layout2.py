"""Layout 2 of sparse_state_dict (what prunekit wrote until 2026-12-03), kept to measure layout 3 against it.

The writer reproduces layout 2's parts (zlib-deflated gap bytes, a zero stored every 255 positions; byte planes,
each deflated where that at least halves it); LOADER is the README loader of that layout (git history), verbatim
but for a shorter docstring.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from worker.engine.models import sparse
from worker.engine.models.sparse_decode import MAX_GAP

LOADER = '''
import json, zlib

import numpy as np
import torch
from safetensors import safe_open


def load_sparse(path, into=None):
    """A sparse_state_dict file (layout 2) as a dense state_dict; into=model.state_dict(): restored in place."""
    with safe_open(path, framework="pt") as f, safe_open(path, framework="np") as raw:  # numpy: 3x faster parts
        index = json.loads(f.metadata()["prunekit.sparse"])  # {name: [shape, dtype, [plane i deflated?]]}
        get = raw.get_tensor  # a uint8 part of a sparse tensor, deflated (z) or not
        part = lambda key, z: np.frombuffer(zlib.decompress(get(key)), np.uint8) if z else get(key)  # noqa: E731
        state = {k: f.get_tensor(k) for k in f.keys() if k.rsplit(".", 1)[0] not in index}
        for name, (shape, dtype, deflated) in index.items():
            numel, gaps = int(np.prod(shape)), part(name + ".__gaps", True)  # distances from the previous element
            kept = np.cumsum(gaps, dtype=np.int32 if numel < 2**31 else np.int64) - 1  # int32: ~10x faster sums
            planes = [part(f"{name}.__byte{i}", z) for i, z in enumerate(deflated)]  # little-endian byte planes
            bits = getattr(torch, f"int{8 * len(planes)}")  # values are handled as their bit patterns
            out = into[name].view(-1).view(bits).zero_() if into is not None else torch.zeros(numel, dtype=bits)
            out.numpy()[kept] = np.stack(planes, axis=1).view(f"<i{len(planes)}").ravel()
            state[name] = out.view(getattr(torch, dtype)).reshape(shape)
        state.update({k: state[v] for k, v in json.loads(f.metadata()["prunekit.aliases"]).items()})  # tied
        for k in state.keys() - index.keys() if into is not None else ():  # the tensors stored as they are
            into[k].copy_(state[k])
    return state
'''


def loader() -> Callable[..., dict[str, torch.Tensor]]:
    """Layout 2's README `load_sparse(path, into=None)`."""
    scope: dict[str, Any] = {}
    exec(LOADER, scope)
    load: Callable[..., dict[str, torch.Tensor]] = scope["load_sparse"]
    return load


def zlib_bytes(data: bytes) -> bytes:
    """Layout 2's deflate: the smaller of zlib's usual stream and a Huffman-only one, both with zlib's wrapper."""
    packer = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_HUFFMAN_ONLY)
    return min(zlib.compress(data, 6), packer.compress(data) + packer.flush(), key=len)


def parts(tensor: torch.Tensor) -> tuple[dict[str, bytes], list[bool]]:
    """One float32 tensor's layout-2 parts ({suffix: bytes}) and which byte planes are deflated."""
    flat = tensor.reshape(-1).view(torch.int32).numpy()
    positions = sparse.stored_positions(np.flatnonzero(flat), MAX_GAP)
    out = {".__gaps": zlib_bytes(np.diff(positions, prepend=-1).astype(np.uint8).tobytes())}
    deflated = []
    for i, plane in enumerate(flat.view(np.uint8).reshape(-1, 4)[positions].T):
        packed = zlib_bytes(plane.tobytes())
        deflated.append(len(packed) <= plane.size / 2)
        out[f".__byte{i}"] = packed if deflated[-1] else plane.tobytes()
    return out, deflated


def _blob(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def write(state: Mapping[str, torch.Tensor], path: Path, sparse_names: Collection[str]) -> dict[str, int]:
    """`state` as a layout-2 file, the tensors in `sparse_names` sparse; returns the bytes of each one's parts."""
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, list[Any]] = {}
    part_bytes: dict[str, int] = {}
    for name, tensor in state.items():
        if name not in sparse_names:
            tensors[name] = tensor
            continue
        encoded, deflated = parts(tensor)
        tensors.update({name + suffix: _blob(data) for suffix, data in encoded.items()})
        index[name] = [list(tensor.shape), "float32", deflated]
        part_bytes[name] = sum(len(data) for data in encoded.values())
    meta = {"prunekit.sparse": json.dumps(index), "prunekit.sparse_layout": "2", "prunekit.aliases": "{}"}
    save_file(tensors, str(path), metadata=meta)
    return part_bytes
