"""Streaming multipart reader: file parts go straight to storage with a size cap and a sha256.

Starlette's own form parser spools whole files to disk before the endpoint runs and cannot
stop at a size cap; this one checks the cap on every chunk and keeps memory flat.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from jobstore.ids import new_id
from jobstore.storage import ObjectWriter, Storage
from service.core.errors import PayloadTooLarge, UnsupportedMediaType, ValidationProblem

# After a 413 we keep reading (and discarding) up to this much so the client sees the response
# instead of a connection reset in the middle of its upload.
DRAIN_LIMIT = 256 * 1024 * 1024
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._\- ]+")


def safe_display_name(name: str | None) -> str:
    """A file name for display only (storage keys never use it)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return _SAFE_NAME.sub("_", base).strip()[:200] or "upload"


@dataclass
class UploadedPart:
    field: str
    name: str
    file_id: str
    key: str
    size: int
    sha256: str


@dataclass
class MultipartForm:
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    files: dict[str, UploadedPart] = dataclasses.field(default_factory=dict)


@dataclass
class _Part:
    field_name: str = ""
    filename: str | None = None
    data: bytearray = dataclasses.field(default_factory=bytearray)
    writer: ObjectWriter | None = None
    hasher: Any = None
    size: int = 0
    file_id: str = ""
    key: str = ""


class _Collector:
    """python-multipart callbacks are synchronous: record what happened, act on it after each chunk."""

    def __init__(self) -> None:
        self.events: list[tuple[str, _Part, bytes]] = []
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_header_field": self._hfield,
            "on_header_value": self._hvalue,
            "on_header_end": self._hend,
            "on_headers_finished": self._headers_done,
        }

    def _begin(self) -> None:
        self._part = _Part()
        self._disposition = b""

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _hend(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise ValidationProblem("a multipart part has no name in its Content-Disposition header")
        self._part.field_name = name.decode("utf-8", "replace")
        if b"filename" in options:
            self._part.filename = options[b"filename"].decode("utf-8", "replace")
        self.events.append(("begin", self._part, b""))

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", self._part, bytes(data[start:end])))

    def _end(self) -> None:
        self.events.append(("end", self._part, b""))


async def receive_multipart(
    request: Request,
    storage: Storage,
    *,
    file_fields: set[str],
    text_fields: set[str],
    max_file_bytes: int,
    max_field_bytes: int,
) -> MultipartForm:
    """Read a multipart body; every file part is stored under `files/<new id>`.

    On any error, everything this request stored is removed before the error is raised.
    """
    ctype = request.headers.get("content-type", "")
    media, params = parse_options_header(ctype)
    if media != b"multipart/form-data":
        raise UnsupportedMediaType(f"expected multipart/form-data, got {ctype or 'no Content-Type'}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise ValidationProblem("multipart body without a boundary")

    collector = _Collector()
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    form = MultipartForm()
    open_writers: list[_Part] = []
    stored: list[str] = []
    stream = request.stream()

    async def cleanup() -> None:
        for part in open_writers:
            if part.writer is not None:
                await to_thread.run_sync(part.writer.abort)
        for key in stored:
            with contextlib.suppress(Exception):  # best effort; the error being raised matters more
                await to_thread.run_sync(storage.delete, key)

    async def handle(kind: str, part: _Part, data: bytes) -> None:
        if kind == "begin":
            if part.filename is not None:
                if part.field_name not in file_fields:
                    raise ValidationProblem(
                        f"unexpected file part '{part.field_name}'",
                        [{"loc": part.field_name, "msg": "unexpected file part"}],
                    )
                if part.field_name in form.files:
                    raise ValidationProblem(
                        f"file part '{part.field_name}' given twice", [{"loc": part.field_name, "msg": "given twice"}]
                    )
                part.file_id = new_id("fil")
                part.key = f"files/{part.file_id}"
                part.hasher = hashlib.sha256()
                part.writer = await to_thread.run_sync(storage.open_writer, part.key)
                open_writers.append(part)
            elif part.field_name not in text_fields:
                raise ValidationProblem(
                    f"unexpected form field '{part.field_name}'", [{"loc": part.field_name, "msg": "unexpected field"}]
                )
        elif kind == "data":
            if part.writer is not None:
                if part.size + len(data) > max_file_bytes:
                    raise PayloadTooLarge(
                        f"file '{part.field_name}' is larger than the upload limit of {max_file_bytes} bytes"
                    )
                part.size += len(data)
                part.hasher.update(data)
                await to_thread.run_sync(part.writer.write, data)
            else:
                if len(part.data) + len(data) > max_field_bytes:
                    raise PayloadTooLarge(f"form field '{part.field_name}' is larger than {max_field_bytes} bytes")
                part.data.extend(data)
        elif kind == "end":
            if part.writer is not None:
                await to_thread.run_sync(part.writer.commit)
                open_writers.remove(part)
                stored.append(part.key)
                form.files[part.field_name] = UploadedPart(
                    part.field_name,
                    safe_display_name(part.filename),
                    part.file_id,
                    part.key,
                    part.size,
                    part.hasher.hexdigest(),
                )
            else:
                if part.field_name in form.fields:
                    raise ValidationProblem(
                        f"form field '{part.field_name}' given twice", [{"loc": part.field_name, "msg": "given twice"}]
                    )
                try:
                    form.fields[part.field_name] = part.data.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValidationProblem(
                        f"form field '{part.field_name}' is not UTF-8", [{"loc": part.field_name, "msg": "not UTF-8"}]
                    ) from None

    try:
        try:
            async for chunk in stream:
                if not chunk:
                    continue
                try:
                    parser.write(chunk)
                except FormParserError as exc:
                    raise ValidationProblem(f"malformed multipart body: {exc}") from None
                events, collector.events = collector.events, []
                for kind, part, data in events:
                    await handle(kind, part, data)
            try:
                parser.finalize()
            except FormParserError as exc:
                raise ValidationProblem(f"malformed multipart body: {exc}") from None
            for kind, part, data in collector.events:
                await handle(kind, part, data)
            if open_writers:
                raise ValidationProblem("the multipart body ended in the middle of a file part")
        except PayloadTooLarge:
            drained = 0
            async for chunk in stream:
                drained += len(chunk)
                if drained > DRAIN_LIMIT:
                    break
            raise
    except BaseException:
        await cleanup()
        raise
    return form


async def discard_files(storage: Storage, form: MultipartForm) -> None:
    """Remove what a multipart request stored, when the request turned out to be unusable."""
    for part in form.files.values():
        with contextlib.suppress(Exception):
            await to_thread.run_sync(storage.delete, part.key)
