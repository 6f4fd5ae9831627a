"""Text data: `.jsonl` / `.jsonl.gz` rows with a text field (and a label), tokenized with the checkpoint's tokenizer.

Causal LMs get every text's tokens joined (separated by the end-of-text token) and packed into blocks of
`data.seq_len`; classifiers get one row per text, padded or cut to `data.seq_len`, with an attention mask.
Rows are read one line at a time; only token ids are kept.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import torch

from prunekit.spec import DataSpec
from worker.engine.errors import InvalidDataError

__all__ = ["TextContext", "TextRows", "is_text_file", "read_text_rows"]

_MAX_LINE_BYTES = 16 * 1024 * 1024
_MAX_ROWS = 10_000_000
# Files one of which every tokenizer transformers can load without custom code is saved with.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


@dataclass(frozen=True)
class TextContext:
    """What text data needs from the model: the folder its tokenizer files are in, and whether it is a causal LM."""

    tokenizer_dir: Path | None
    causal_lm: bool


@dataclass
class TextRows:
    """Token ids (and masks and labels) of a text file: inputs by name, labels or None."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor | None
    notes: list[str]


def is_text_file(path: Path) -> bool:
    """A gzip stream or a file whose first non-blank byte opens a JSON object (a .jsonl line)."""
    with path.open("rb") as fh:
        head = fh.read(64)
    return head[:2] == b"\x1f\x8b" or head.lstrip()[:1] == b"{"


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return cast(IO[bytes], gzip.open(path, "rb")) if gz else path.open("rb")


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with _open(path) as fh:
            for number, line in enumerate(fh, start=1):
                if number > _MAX_ROWS:
                    raise InvalidDataError(f"{path.name} has more than {_MAX_ROWS} lines")
                if len(line) > _MAX_LINE_BYTES:
                    raise InvalidDataError(f"{path.name} line {number} is longer than 16 MiB")
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise InvalidDataError(f"{path.name} line {number} is not a JSON object: {exc}") from None
                if not isinstance(row, dict):
                    raise InvalidDataError(f"{path.name} line {number} is not a JSON object")
                yield number, row
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InvalidDataError(f"{path.name} cannot be read as .jsonl or .jsonl.gz ({exc})") from None


def _text(path: Path, number: int, row: dict[str, Any], field: str) -> str:
    value = row.get(field)
    if not isinstance(value, str):
        keys = ", ".join(sorted(row)[:8])
        raise InvalidDataError(
            f"{path.name} line {number} has no text field {field!r} (it has: {keys}); set data.text_field"
        )
    return value


def _label(path: Path, number: int, row: dict[str, Any], field: str) -> int:
    value = row.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidDataError(
            f"{path.name} line {number}: label field {field!r} must be a class index >= 0, got {value!r}; "
            "set data.label_field"
        )
    return value


def _tokenizer(ctx: TextContext) -> Any:
    if ctx.tokenizer_dir is None:
        raise InvalidDataError(
            "text data (.jsonl) needs a tokenizer: upload a Hugging Face checkpoint archive with its tokenizer "
            "files, or give token ids as .npz arrays"
        )
    if not any((ctx.tokenizer_dir / name).is_file() for name in _TOKENIZER_FILES):
        raise InvalidDataError(
            "text data (.jsonl) needs the checkpoint's tokenizer, but the archive has none of "
            f"{', '.join(_TOKENIZER_FILES)}: save it with tokenizer.save_pretrained() into the model folder"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(ctx.tokenizer_dir), trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InvalidDataError(
            f"text data needs the checkpoint's tokenizer, which could not be loaded ({first}): save it with "
            "tokenizer.save_pretrained() into the model folder"
        ) from None


def _packed(path: Path, tok: Any, spec: DataSpec) -> TextRows:
    sep = [tok.eos_token_id] if tok.eos_token_id is not None else []
    ids: list[int] = []
    texts = 0
    for number, row in _rows(path):
        ids.extend(tok(_text(path, number, row, spec.text_field), add_special_tokens=False)["input_ids"] + sep)
        texts += 1
    blocks = len(ids) // spec.seq_len
    if blocks < 2:
        raise InvalidDataError(
            f"{path.name} holds {len(ids)} tokens in {texts} texts: fewer than two blocks of data.seq_len "
            f"{spec.seq_len}; give more text or a smaller seq_len"
        )
    tensor = torch.tensor(ids[: blocks * spec.seq_len], dtype=torch.int64).view(blocks, spec.seq_len)
    note = f"{texts} texts, {len(ids)} tokens packed into {blocks} blocks of {spec.seq_len} (the rest dropped)"
    return TextRows({"input_ids": tensor}, None, [note])


def _per_text(path: Path, tok: Any, spec: DataSpec) -> TextRows:
    rows, masks, labels, cut = [], [], [], 0
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for number, row in _rows(path):
        ids = tok(_text(path, number, row, spec.text_field))["input_ids"]
        if len(ids) > spec.seq_len:
            if spec.too_long == "refuse":
                raise InvalidDataError(
                    f"{path.name} line {number} has {len(ids)} tokens, more than data.seq_len {spec.seq_len} "
                    "(data.too_long is 'refuse'; set it to 'truncate' or raise seq_len)"
                )
            ids, cut = ids[: spec.seq_len], cut + 1
        rows.append(ids + [pad] * (spec.seq_len - len(ids)))
        masks.append([1] * len(ids) + [0] * (spec.seq_len - len(ids)))
        labels.append(_label(path, number, row, spec.label_field))
    if not rows:
        raise InvalidDataError(f"{path.name} has no rows")
    notes = [f"{cut} of {len(rows)} texts were cut to data.seq_len {spec.seq_len} tokens"] if cut else []
    inputs = {"input_ids": torch.tensor(rows), "attention_mask": torch.tensor(masks)}
    return TextRows(inputs, torch.tensor(labels), notes)


def read_text_rows(path: Path, spec: DataSpec, ctx: TextContext) -> TextRows:
    """Tokenize a .jsonl(.gz) file: packed blocks for causal LMs, padded labelled rows for classifiers."""
    tok = _tokenizer(ctx)
    return _packed(path, tok, spec) if ctx.causal_lm else _per_text(path, tok, spec)
