"""The sparse_state_dict layout: bit-identical round trips, detection by content, and refusal of bad files."""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from worker.engine.errors import InvalidModelError
from worker.engine.models.formats import detect_format
from worker.engine.models.loading import load_state_dict_file
from worker.engine.models.sparse import (
    LAYOUT_KEY,
    deflate,
    encode_tensor,
    gap_bytes,
    read_sparse,
    stored_positions,
    write_sparse,
)
from worker.engine.models.sparse_decode import BYTE, GAPS, MASK, VALUES, positions_of

README = Path(__file__).resolve().parents[4] / "README.md"


def readme_loader() -> str:
    """The loader exactly as the README documents it (between its marker comments)."""
    text = README.read_text()
    found = re.search(r"<!-- sparse-loader -->\s*```python\n(.*?)```", text, re.S)
    if found is None:
        raise LookupError("README.md has no <!-- sparse-loader --> code block")
    return found.group(1)


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The raw bytes, so -0.0 != 0.0 and every NaN payload counts: bit-identical, not numerically close."""
    return tensor.contiguous().reshape(-1).view(torch.uint8) if tensor.dtype != torch.bool else tensor


def assert_bit_identical(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Same names, shapes, dtypes and bytes."""
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        assert torch.equal(_bits(got[name]), _bits(value)), name


def _pruned(shape: tuple[int, ...], sparsity: float, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g).to(dtype)
    return w.masked_fill(torch.rand(shape, generator=g) < sparsity, 0)


def _two_four(rows: int, cols: int) -> torch.Tensor:
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(1))
    groups = w.view(rows, cols // 4, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.abs().topk(2, dim=-1).indices, True)
    return (groups * keep).view(rows, cols)


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    negative_zero = _pruned((64, 64), 0.9)
    negative_zero[0, :8] = -0.0  # masked by multiplying a negative weight: its sign bit must survive
    return {
        "conv.weight": _pruned((32, 16, 3, 3), 0.9),
        "fc.weight": negative_zero,
        "half.weight": _pruned((40, 40), 0.95, torch.float16),
        "bf16.weight": _pruned((40, 40), 0.5, torch.bfloat16),
        "nm.weight": _two_four(16, 64),
        "dense.weight": torch.randn(30, 30),  # nothing pruned: stored as is
        "empty.weight": torch.zeros(20, 20),  # fully pruned
        "bias": torch.randn(32),
        "bn.num_batches_tracked": torch.tensor(7),
        "one_left": torch.zeros(300).index_fill_(0, torch.tensor([299]), 1.5),
    }


def test_round_trip_is_bit_identical_and_smaller(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "m.sparse.safetensors"
    write_sparse(state, path, {"architecture": "x"})
    assert_bit_identical(read_sparse(path), state)
    with safe_open(str(path), framework="pt") as fh:
        index, keys = json.loads(fh.metadata()["prunekit.sparse"]), set(fh.keys())
    assert {"conv.weight", "fc.weight", "half.weight", "nm.weight", "empty.weight"} <= set(index)
    assert "dense.weight" in keys and "dense.weight" not in index and "bias" in keys
    dense = sum(v.numel() * v.element_size() for v in state.values())
    assert path.stat().st_size < 0.5 * dense


def test_readme_loader_restores_the_same_bits(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "m.sparse.safetensors"
    write_sparse(state, path, {})
    scope: dict[str, object] = {}
    exec(readme_loader(), scope)  # the documented snippet itself, not a copy of it
    lines = [line for line in readme_loader().splitlines() if line.strip()]
    assert len(lines) <= 23  # a few lines to copy, not a library
    assert_bit_identical(scope["load_sparse"](str(path)), state)  # type: ignore[operator]


def test_readme_loader_restores_into_a_models_tensors_in_place(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "m.sparse.safetensors"
    write_sparse(state, path, {})
    scope: dict[str, object] = {}
    exec(readme_loader(), scope)
    into = {k: torch.full_like(v, 3) for k, v in state.items()}  # stale values everywhere, zeros included
    storages = {k: v.data_ptr() for k, v in into.items()}
    scope["load_sparse"](str(path), into=into)  # type: ignore[operator]
    assert_bit_identical(into, state)
    assert {k: v.data_ptr() for k, v in into.items()} == storages  # written into, not replaced


def test_tied_tensors_are_stored_once(tmp_path: Path) -> None:
    embedding = torch.randn(500, 16)  # a tied embedding / output head: not pruned, the largest tensor
    state = {"wte.weight": embedding, "layer.weight": _pruned((64, 64), 0.9), "lm_head.weight": embedding}
    once, twice = tmp_path / "once.safetensors", tmp_path / "twice.safetensors"
    write_sparse(state, once, {})
    write_sparse({**state, "lm_head.weight": embedding.clone()}, twice, {})
    assert twice.stat().st_size - once.stat().st_size >= embedding.numel() * 4
    assert_bit_identical(read_sparse(once), state)
    scope: dict[str, object] = {}
    exec(readme_loader(), scope)
    assert_bit_identical(scope["load_sparse"](str(once)), state)  # type: ignore[operator]
    into = {"wte.weight": torch.zeros(500, 16), "layer.weight": torch.zeros(64, 64)}
    into["lm_head.weight"] = into["wte.weight"]  # tied in the model too
    scope["load_sparse"](str(once), into=into)  # type: ignore[operator]
    assert_bit_identical(into, state)


def test_detected_by_content_and_read_as_a_state_dict(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"  # the name says nothing
    write_sparse(state, path, {})
    assert detect_format(path).container == "sparse safetensors"
    assert detect_format(path).format == "state_dict"
    assert_bit_identical(load_state_dict_file(path), state)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, str(plain), metadata={"other": "1"})
    assert detect_format(plain).container == "safetensors"


def _rewrite(path: Path, out: Path, change: dict[str, object]) -> None:
    """A copy of a sparse file with tensors or the index replaced (None drops a tensor)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in list(fh.keys())}
    if "index" in change:
        meta["prunekit.sparse"] = json.dumps(change.pop("index"))
    if "layout" in change:
        meta[LAYOUT_KEY] = str(change.pop("layout"))
    for key, value in change.items():
        if value is None:
            tensors.pop(key)
        else:
            assert isinstance(value, torch.Tensor)
            tensors[key] = value
    save_file(tensors, str(out), metadata=meta)


def _blob(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"w" + BYTE + "0": None}, "do not match its index"),
        ({"w" + GAPS: _blob(b"not zlib at all")}, "position gaps is corrupt"),
        ({"w" + BYTE + "3": _blob(zlib.compress(b"\x01" * 12))}, "does not have the size"),
        ({"w" + BYTE + "0": _blob(b"\x01" * 12)}, "does not have the size its gaps declare"),
        ({"w" + GAPS: _blob(zlib.compress(b"\x01" * 2000))}, "does not have the size"),
        ({"w" + GAPS: _blob(zlib.compress(b"\xff" * 5))}, "run past the end"),
        ({"w" + GAPS: _blob(zlib.compress(b"\x01\x00\x01"))}, "hold a 0"),
        ({"index": {"w": [[1020], "float32", [False, False, False, True]]}}, "run past the end"),
        ({"index": {"w": [[1024], "float32", [True]]}}, "does not list its byte planes"),
        ({"index": {"w": [[1024], "int64", [True] * 8]}}, "not \\[shape, dtype, planes\\]"),
        ({"index": {"w": [[-1], "float32", [True] * 4]}}, "not \\[shape, dtype, planes\\]"),
        ({"index": {"w": [[1024], "float32"]}}, "not \\[shape, dtype, planes\\]"),
        ({"index": ["w"]}, "not a JSON object"),
        ({"index": {"w": [[10**9, 10**6], "float32", [True] * 4]}}, "refused: the sparse file declares"),
        ({"layout": "9"}, "layout version '9'"),
        ({"w" + BYTE + "1": torch.zeros(25, dtype=torch.float32)}, "not flat uint8 tensors"),
    ],
)
def test_inconsistent_files_are_refused(tmp_path: Path, change: dict[str, object], message: str) -> None:
    good = tmp_path / "good.safetensors"
    write_sparse({"w": _pruned((1024,), 0.9).index_fill_(0, torch.tensor([1023]), 2.0)}, good, {})
    bad = tmp_path / "bad.safetensors"
    _rewrite(good, bad, change)
    with pytest.raises(InvalidModelError, match=message):
        read_sparse(bad)


@pytest.mark.parametrize("part", [GAPS, BYTE + "3"])
def test_a_part_that_inflates_past_its_tensor_is_not_inflated(tmp_path: Path, part: str) -> None:
    # 64 KiB of zlib that would inflate to 64 MiB: reading stops at the size the tensor allows, long before
    good = tmp_path / "good.safetensors"
    write_sparse({"w": _pruned((1024,), 0.9)}, good, {})
    bomb = zlib.compressobj(9)
    chunk = bomb.compress(b"\x01" * (64 * 1024 * 1024)) + bomb.flush()
    bad = tmp_path / "bomb.safetensors"
    _rewrite(good, bad, {"w" + part: _blob(chunk)})
    with pytest.raises(InvalidModelError, match="does not have the size"):
        read_sparse(bad)


@pytest.mark.parametrize(
    "nonzero", [[], [0], [5], [254], [255], [256], [0, 1, 2], [3, 600, 601, 1200], [509, 510, 765, 766, 5000]]
)
def test_long_runs_of_zeros_store_a_zero_every_255_positions(nonzero: list[int]) -> None:
    wanted = np.array(nonzero, dtype=np.int64)
    stored = stored_positions(wanted)
    assert set(wanted.tolist()) <= set(stored.tolist())
    gaps = np.diff(stored, prepend=-1)
    assert gaps.size == 0 or (gaps.min() >= 1 and gaps.max() <= 255)  # every distance fits a byte
    extra = sum(max(0, int(d) - 1) // 255 for d in np.diff(wanted, prepend=-1))
    assert stored.size == wanted.size + extra  # no more fillers than the gaps need
    assert np.array_equal(positions_of(gap_bytes(stored)), stored)


def test_a_nearly_empty_tensor_restores_exactly(tmp_path: Path) -> None:
    w = torch.zeros(100_000)
    w[[7, 70_000, 99_999]] = torch.tensor([1.5, -2.0, 3.0])  # runs of zeros far longer than a byte's gap
    path = tmp_path / "m.safetensors"
    write_sparse({"w": w}, path, {})
    assert_bit_identical(read_sparse(path), {"w": w})
    scope: dict[str, object] = {}
    exec(readme_loader(), scope)
    assert_bit_identical(scope["load_sparse"](str(path)), {"w": w})  # type: ignore[operator]
    assert path.stat().st_size < 4000


def _write_v1(state: dict[str, torch.Tensor], path: Path) -> None:
    """A file as prunekit wrote it before layout 2: bitmask + one blob of byte planes, no layout key."""
    tensors, index = {}, {}
    for name, value in state.items():
        keep = value.reshape(-1).view(torch.int32) != 0
        planes = value.reshape(-1)[keep].view(torch.uint8).view(-1, 4).t().contiguous().numpy().tobytes()
        tensors[name + MASK] = _blob(zlib.compress(np.packbits(keep.numpy(), bitorder="little").tobytes()))
        tensors[name + VALUES] = _blob(zlib.compress(planes))
        index[name] = [list(value.shape), "float32"]
    meta = {"format": "sparse_state_dict", "prunekit.sparse": json.dumps(index), "prunekit.aliases": "{}"}
    save_file(tensors, str(path), metadata=meta)


def test_layout_1_files_stay_readable(tmp_path: Path) -> None:
    state = {"conv.weight": _pruned((32, 16, 3, 3), 0.9), "fc.weight": _pruned((64, 64), 0.5)}
    path = tmp_path / "v1.safetensors"
    _write_v1(state, path)
    assert detect_format(path).container == "sparse safetensors"
    assert_bit_identical(read_sparse(path), state)
    bad = tmp_path / "bad.safetensors"
    _rewrite(path, bad, {"fc.weight" + MASK: _blob(zlib.compress(b"\xff" * 600))})
    with pytest.raises(InvalidModelError, match="does not have the size"):
        read_sparse(bad)


def test_low_mantissa_planes_are_stored_as_they_are(tmp_path: Path) -> None:
    # random mantissa bytes do not deflate: storing them raw is as small and makes loading faster
    path = tmp_path / "m.safetensors"
    write_sparse({"w": _pruned((256, 256), 0.9)}, path, {})
    with safe_open(str(path), framework="pt") as fh:
        deflated = json.loads(fh.metadata()["prunekit.sparse"])["w"][2]
        assert fh.metadata()[LAYOUT_KEY] == "2"
    assert deflated[:2] == [False, False] and deflated[3] is True  # sign + exponent: deflated


def test_a_plane_is_deflated_only_where_that_saves_the_share_asked() -> None:
    w = _pruned((256, 256), 0.9)
    never, usual = encode_tensor(w, min_plane_saving=1.0), encode_tensor(w)
    assert never.deflated == [False] * 4 and usual.deflated[3] is True
    assert never.nbytes > usual.nbytes  # the sign/exponent plane is worth its inflate


def test_gaps_take_the_smaller_stream_and_plain_zlib_reads_it() -> None:
    gaps = np.random.default_rng(0).geometric(0.1, 100_000).clip(1, 255).astype(np.uint8).tobytes()
    repeats = bytes(range(256)) * 400
    for data in (gaps, repeats):
        packed = deflate(data)
        assert zlib.decompress(packed) == data and len(packed) <= len(zlib.compress(data, 6))
    assert len(deflate(gaps)) < len(zlib.compress(gaps, 6))  # Huffman-only wins on gaps (no repeats for LZ77)


def test_two_four_bitmask_deflates_below_the_two_bit_index_layout() -> None:
    # Why N:M has no layout of its own: 2-bit indices cost 4 bits per group of 4, the deflated bitmask less.
    w = _two_four(256, 512)
    bits = (w != 0).numpy().reshape(-1)
    deflated = len(zlib.compress(np.packbits(bits, bitorder="little").tobytes(), 6))
    two_bit_indices = math.ceil(w.numel() / 4 * 2 * 2 / 8)
    assert deflated < two_bit_indices
