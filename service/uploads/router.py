"""HTTP routes of /v1/uploads: resumable uploads of large files, sent in chunks (docs/service.md)."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Header, Request, Response
from starlette.requests import ClientDisconnect

from jobstore.storage import ChunkWriter, ObjectMissing
from jobstore.storage.cleanup import remove_stale_uploads
from service.core.deps import CurrentKey, OwnedUpload, StateDep
from service.core.errors import NotFound, ValidationProblem, problem_responses
from service.files.schemas import FileInfo
from service.uploads import service
from service.uploads.schemas import Upload, UploadComplete, UploadCreate, upload_view

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], responses=problem_responses(401, 422))

# Body bytes gathered before one write in a worker thread: a thread hop per 64 KiB read costs more than the write.
_WRITE_BATCH = 1024 * 1024
_CHUNK_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _offset_headers(response: Response, upload: Upload) -> None:
    response.headers["Upload-Offset"] = str(upload.offset)
    response.headers["Upload-Length"] = str(upload.size)
    response.headers["Cache-Control"] = "no-store"


@router.post("", status_code=201, response_model=Upload, responses=problem_responses(413, 429))
def create_upload(body: UploadCreate, state: StateDep, key: CurrentKey, response: Response) -> Upload:
    """Announce a file (name, kind, size, optional sha256); send it with PUT in chunks of `chunk_size` bytes."""
    st = state.settings
    remove_stale_uploads(state.db, state.storage, st.upload_part_stale_after, owner=key.name)  # frees their quota
    rec = service.create_upload(state.db, state.storage, st, key.name, body)
    upload = upload_view(rec, st.upload_part_stale_after)
    response.headers["Location"] = f"/v1/uploads/{upload.id}"
    _offset_headers(response, upload)
    return upload


@router.get("/{upload_id}", response_model=Upload, responses=problem_responses(404))
def get_upload(rec: OwnedUpload, state: StateDep, response: Response) -> Upload:
    """Where an upload stands: `offset` is where the next chunk starts (ask after a dropped connection)."""
    upload = service.describe(state.db, state.settings, rec.owner, rec.id)
    _offset_headers(response, upload)
    return upload


@router.head("/{upload_id}", responses=problem_responses(404))
def head_upload(rec: OwnedUpload, state: StateDep) -> Response:
    """The upload's offset in `Upload-Offset` (and its size in `Upload-Length`), without a body."""
    response = Response(status_code=200)
    _offset_headers(response, service.describe(state.db, state.settings, rec.owner, rec.id))
    return response


@router.put("/{upload_id}", response_model=Upload, openapi_extra=_CHUNK_DOC, responses=problem_responses(404, 409, 416))
async def put_chunk(
    request: Request,
    rec: OwnedUpload,
    state: StateDep,
    response: Response,
    content_range: Annotated[str | None, Header()] = None,
) -> Upload:
    """Store one chunk at the upload's offset (`Content-Range: bytes a-b/size`); a chunk it has already is
    acknowledged again, so a chunk whose answer was lost can be sent twice."""
    plan = service.plan_chunk(rec, state.settings, content_range)
    declared = request.headers.get("content-length")
    if declared is not None and declared != str(plan.length):
        raise ValidationProblem(f"Content-Length is {declared} but the Content-Range holds {plan.length} bytes")
    if plan.duplicate:
        await _drain(request, plan.length)
        upload = await to_thread.run_sync(service.describe, state.db, state.settings, rec.owner, rec.id)
    else:
        part = await _receive_chunk(request, state, rec.id, rec.storage_key, rec.staging_ref, plan)
        args = (state.db, state.settings, rec.owner, rec.id, plan, part)
        upload = await to_thread.run_sync(service.record_chunk, *args)
    _offset_headers(response, upload)
    return upload


@router.post("/{upload_id}/complete", response_model=FileInfo, responses=problem_responses(404, 409, 429))
def complete_upload(rec: OwnedUpload, state: StateDep, body: UploadComplete | None = None) -> FileInfo:
    """Check the received bytes' size and sha256 and publish them as a file (usable as model_file_id or
    data_file_id); asking again after a lost answer returns the same file."""
    sha256 = body.sha256 if body is not None else None
    return service.complete_upload(state.db, state.storage, state.settings, rec.owner, rec.id, sha256)


@router.delete("/{upload_id}", status_code=204, responses=problem_responses(404, 409))
def abort_upload(rec: OwnedUpload, state: StateDep) -> Response:
    """Give up an unfinished upload and free what it staged."""
    service.abort_upload(state.db, state.storage, rec.owner, rec.id)
    return Response(status_code=204)


async def _receive_chunk(
    request: Request, state: StateDep, upload_id: str, key: str, ref: str | None, plan: service.ChunkPlan
) -> dict[str, object]:
    """Stream the body into the storage's chunk writer; nothing is acknowledged unless every byte arrived."""
    try:
        writer: ChunkWriter = await to_thread.run_sync(
            state.storage.open_chunk, upload_id, key, ref, plan.start, plan.number
        )
    except ObjectMissing:
        raise NotFound(f"upload {upload_id} expired: its staged bytes are gone; start a new upload") from None
    try:
        await _copy_body(request, writer, plan.length)
        return await to_thread.run_sync(writer.commit)
    except ObjectMissing:
        raise NotFound(f"upload {upload_id} expired: its staged bytes are gone; start a new upload") from None
    except BaseException:
        await to_thread.run_sync(writer.abort)
        raise


async def _copy_body(request: Request, writer: ChunkWriter, length: int) -> None:
    received, batch = 0, bytearray()
    try:
        async for data in request.stream():
            received += len(data)
            if received > length:
                raise ValidationProblem(f"the body is longer than the {length} bytes of its Content-Range")
            batch += data
            if len(batch) >= _WRITE_BATCH:
                await to_thread.run_sync(writer.write, bytes(batch))
                batch.clear()
    except ClientDisconnect:
        # The client went away mid-chunk: nothing to answer; it asks for the offset and sends the chunk again.
        raise ValidationProblem("the connection closed before the chunk's last byte") from None
    if received < length:
        raise ValidationProblem(f"the body has {received} bytes; its Content-Range announced {length}")
    if batch:
        await to_thread.run_sync(writer.write, bytes(batch))


async def _drain(request: Request, length: int) -> None:
    """Read a repeated chunk's body (at most its announced length) so the connection can be reused."""
    received = 0
    try:
        async for data in request.stream():
            received += len(data)
            if received > length:
                return
    except ClientDisconnect:
        return
