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
    code_tables,
    deflate,
    encode_tensor,
    read_sparse,
    stored_positions,
    write_sparse,
)
from worker.engine.models.sparse_decode import BYTE, CODES, GAPS, LOW, MASK, MAX_GAP, TABLES, VALUES, positions_of

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
        "f64.weight": _pruned((30, 40), 0.8, torch.float64),  # 7 low bytes per element
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
    assert {"conv.weight", "fc.weight", "half.weight", "bf16.weight", "nm.weight", "empty.weight"} <= set(index)
    assert index["f64.weight"][2][1] is True  # float32 values as float64: their zero low bytes deflate
    assert "dense.weight" in keys and "dense.weight" not in index and "bias" in keys
    dense = sum(v.numel() * v.element_size() for v in state.values())
    assert path.stat().st_size < 0.5 * dense


def test_readme_loader_restores_the_same_bits(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "m.sparse.safetensors"
    write_sparse(state, path, {})
    scope: dict[str, object] = {}
    exec(readme_loader(), scope)  # the documented snippet itself, not a copy of it
    lines = [line for line in readme_loader().splitlines() if line.strip()]
    assert len(lines) <= 32  # a few lines to copy, not a library
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


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def _w(deflated: list[bool], shape: int = 1024) -> dict[str, object]:
    return {"index": {"w": [[shape], "float32", deflated]}}


_GAP_255 = _blob(bytes([255] * 256 + [0] * 256))  # every code: 255 positions on, top byte 0
_GAP_0 = _blob(bytes([0] * 512))  # every code: no step (two elements at one position)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"w" + LOW: None}, "do not match its index"),
        ({"w" + CODES: _blob(b"not deflate at all"), **_w([True, False])}, "codes is corrupt"),
        ({"w" + CODES: _blob(b"\x01" * 2000), **_w([False, False])}, "more than the elements"),
        ({"w" + CODES: _blob(_raw_deflate(b"\x01" * 2000)), **_w([True, False])}, "does not have the size"),
        ({"w" + CODES: _blob(b"\x00" * 5), "w" + TABLES: _GAP_255, **_w([False, False])}, "run past the end"),
        ({"w" + CODES: _blob(b"\x00\x00"), "w" + TABLES: _GAP_0, **_w([False, False])}, "hold a 0"),
        ({"w" + CODES: _blob(b"\x00"), "w" + LOW: _blob(b"\x01" * 12), **_w([False, False])}, "low bytes do not"),
        ({"w" + CODES: _blob(b"\x00"), "w" + LOW: _blob(_raw_deflate(b"\x01" * 9)), **_w([False, True])}, "the size"),
        ({"w" + TABLES: _blob(b"\x01" * 100)}, "code tables do not hold 512"),
        ({"index": {"w": [[1020], "float32", [False, False]]}}, "run past the end"),
        (_w([True]), "does not list its parts"),
        ({"index": {"w": [[1024], "int64", [True, True]]}}, "not \\[shape, dtype, parts\\]"),
        ({"index": {"w": [[-1], "float32", [True, True]]}}, "not \\[shape, dtype, parts\\]"),
        ({"index": {"w": [[1024], "float32"]}}, "not \\[shape, dtype, parts\\]"),
        ({"index": ["w"]}, "not a JSON object"),
        ({"index": {"w": [[10**9, 10**6], "float32", [True, True]]}}, "refused: the sparse file declares"),
        ({"layout": "9"}, "layout version '9'"),
        ({"w" + LOW: torch.zeros(25, dtype=torch.float32)}, "not flat uint8 tensors"),
    ],
)
def test_inconsistent_files_are_refused(tmp_path: Path, change: dict[str, object], message: str) -> None:
    good = tmp_path / "good.safetensors"
    write_sparse({"w": _pruned((1024,), 0.9).index_fill_(0, torch.tensor([1023]), 2.0)}, good, {}, 1.0)  # raw parts
    bad = tmp_path / "bad.safetensors"
    _rewrite(good, bad, dict(change))
    with pytest.raises(InvalidModelError, match=message):
        read_sparse(bad)


@pytest.mark.parametrize("part", [CODES, LOW])
def test_a_part_that_inflates_past_its_tensor_is_not_inflated(tmp_path: Path, part: str) -> None:
    # 64 KiB of deflate that would inflate to 64 MiB: reading stops at the size the tensor allows, long before
    good = tmp_path / "good.safetensors"
    write_sparse({"w": _pruned((1024,), 0.9)}, good, {}, 1.0)  # codes and low bytes stored raw
    with safe_open(str(good), framework="pt") as fh:
        codes = fh.get_tensor("w" + CODES).numpy().tobytes()
    bomb = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = bomb.compress(b"\x01" * (64 * 1024 * 1024)) + bomb.flush()
    bad = tmp_path / "bomb.safetensors"
    _rewrite(good, bad, {"w" + CODES: _blob(_raw_deflate(codes)), "w" + part: _blob(chunk), **_w([True, True])})
    with pytest.raises(InvalidModelError, match="does not have the size"):
        read_sparse(bad)


@pytest.mark.parametrize("span", [255, 127, 2])
@pytest.mark.parametrize(
    "nonzero", [[], [0], [5], [254], [255], [256], [0, 1, 2], [3, 600, 601, 1200], [509, 510, 765, 766, 5000]]
)
def test_long_runs_of_zeros_store_a_filler_every_span_positions(nonzero: list[int], span: int) -> None:
    wanted = np.array(nonzero, dtype=np.int64)
    stored = stored_positions(wanted, span)
    assert set(wanted.tolist()) <= set(stored.tolist())
    gaps = np.diff(stored, prepend=-1)
    assert gaps.size == 0 or (gaps.min() >= 1 and gaps.max() <= span)  # every distance has a code
    extra = sum(max(0, int(d) - 1) // span for d in np.diff(wanted, prepend=-1))
    assert stored.size == wanted.size + extra  # no more fillers than the gaps need
    assert np.array_equal(positions_of(gaps.astype(np.uint8)), stored)


def test_each_code_decodes_to_its_gap_and_top_byte() -> None:
    tables = code_tables(np.array([0xBF, 0x3F, 0x3F, 0xBE], dtype=np.uint8))  # three distinct top bytes
    assert tables.span == 85 and tables.filler == 255
    gaps, tops = np.array([1, 85, 3, 85]), np.array([0x3F, 0xBF, 0xBE, 0])
    codes = tables.encode(gaps, tops, np.array([False, False, False, True]))
    table, codes = np.frombuffer(tables.to_bytes(), np.uint8), codes.astype(np.int64)
    assert table[codes].tolist() == gaps.tolist() and table[256 + codes].tolist() == tops.tolist()


def test_a_tensor_with_too_many_top_bytes_is_stored_as_it_is(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(64, 64, generator=g) * torch.pow(2.0, torch.randint(-120, 120, (64, 64), generator=g).float())
    w = w.masked_fill(torch.rand(64, 64, generator=g) < 0.5, 0)  # ~240 distinct top bytes: no room for gaps
    assert encode_tensor(w) is None
    path = tmp_path / "m.safetensors"
    write_sparse({"w": w, "v": _pruned((64, 64), 0.9)}, path, {})
    with safe_open(str(path), framework="pt") as fh:
        assert set(json.loads(fh.metadata()["prunekit.sparse"])) == {"v"} and "w" in set(fh.keys())
    assert_bit_identical(read_sparse(path), {"w": w, "v": _pruned((64, 64), 0.9)})


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


def _write_v2(state: dict[str, torch.Tensor], path: Path) -> None:
    """A file as prunekit wrote it in layout 2: zlib-deflated gap bytes + byte planes (the last one deflated)."""
    tensors, index = {}, {}
    for name, value in state.items():
        positions = stored_positions(np.flatnonzero(value.reshape(-1).view(torch.int32).numpy()), MAX_GAP)
        planes = value.reshape(-1)[torch.from_numpy(positions)].view(torch.uint8).view(-1, 4).t().contiguous()
        tensors[name + GAPS] = _blob(zlib.compress(np.diff(positions, prepend=-1).astype(np.uint8).tobytes()))
        for i, plane in enumerate(planes.numpy()):
            tensors[f"{name}{BYTE}{i}"] = _blob(zlib.compress(plane.tobytes()) if i == 3 else plane.tobytes())
        index[name] = [list(value.shape), "float32", [False, False, False, True]]
    meta = {"prunekit.sparse": json.dumps(index), "prunekit.aliases": "{}", LAYOUT_KEY: "2"}
    save_file(tensors, str(path), metadata=meta)


def test_layout_2_files_stay_readable(tmp_path: Path) -> None:
    state = {"conv.weight": _pruned((32, 16, 3, 3), 0.9), "fc.weight": _pruned((600, 64), 0.995)}  # long runs
    path = tmp_path / "v2.safetensors"
    _write_v2(state, path)
    assert_bit_identical(read_sparse(path), state)
    bad = tmp_path / "bad.safetensors"
    _rewrite(path, bad, {"fc.weight" + BYTE + "0": _blob(b"\x01" * 7)})
    with pytest.raises(InvalidModelError, match="byte plane 0 does not have the size"):
        read_sparse(bad)


def test_codes_are_deflated_and_low_bytes_stored_as_they_are(tmp_path: Path) -> None:
    # random mantissa bytes do not deflate: storing them raw is as small and makes loading faster
    path = tmp_path / "m.safetensors"
    write_sparse({"w": _pruned((256, 256), 0.5)}, path, {})
    with safe_open(str(path), framework="pt") as fh:
        assert json.loads(fh.metadata()["prunekit.sparse"])["w"][2] == [True, False]
        assert fh.metadata()[LAYOUT_KEY] == "3"


def test_a_part_is_deflated_only_where_that_saves_the_share_asked() -> None:
    w = _pruned((256, 256), 0.5)
    never, usual = encode_tensor(w, min_deflate_saving=1.0), encode_tensor(w)
    assert never is not None and usual is not None
    assert never.deflated == [False, False] and usual.deflated == [True, False]
    assert never.nbytes > usual.nbytes  # the codes are worth their inflate at 50%


def test_codes_take_the_smaller_stream_and_plain_zlib_reads_it() -> None:
    codes = np.random.default_rng(0).geometric(0.1, 100_000).clip(1, 255).astype(np.uint8).tobytes()
    repeats = bytes(range(256)) * 400
    for data in (codes, repeats):
        packed = deflate(data)
        assert zlib.decompress(packed, -15) == data and len(packed) <= len(_raw_deflate(data))
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert len(deflate(codes)) < len(packer.compress(codes) + packer.flush())  # Huffman-only wins (no repeats)


def test_two_four_bitmask_deflates_below_the_two_bit_index_layout() -> None:
    # Why N:M has no layout of its own: 2-bit indices cost 4 bits per group of 4, the deflated bitmask less.
    w = _two_four(256, 512)
    bits = (w != 0).numpy().reshape(-1)
    deflated = len(zlib.compress(np.packbits(bits, bitorder="little").tobytes(), 6))
    two_bit_indices = math.ceil(w.numel() / 4 * 2 * 2 / 8)
    assert deflated < two_bit_indices
