"""HTTP routes of /v1/files."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Request, Response

from service.core import quotas
from service.core.deps import CurrentKey, OwnedFile, SessionDep, StateDep
from service.core.errors import ValidationProblem, problem_responses
from service.core.multipart import discard_files, receive_multipart
from service.files import service
from service.files.schemas import FileInfo, FileKind, FileList

router = APIRouter(prefix="/v1/files", tags=["files"], responses=problem_responses(401, 422))

_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "kind": {"type": "string", "enum": [k.value for k in FileKind], "default": "model"},
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=FileInfo,
    openapi_extra=_UPLOAD_DOC,
    responses=problem_responses(413, 415, 429),
)
async def upload_file(request: Request, state: StateDep, key: CurrentKey) -> FileInfo:
    """Upload a model or dataset once (streamed, size-capped, sha256 computed on the way), within the key's quota."""

    def room() -> None:
        with state.db.sessionmaker() as session:
            quotas.check_room(session, state.settings, key.name)

    await to_thread.run_sync(room)  # a key with no byte left is told before it sends the body
    form = await receive_multipart(
        request,
        state.storage,
        file_fields={"file"},
        text_fields={"kind"},
        max_file_bytes=state.settings.max_upload_bytes,
        max_field_bytes=state.settings.max_form_field_bytes,
    )
    kind = form.fields.get("kind", FileKind.MODEL)
    problem: ValidationProblem | None = None
    if "file" not in form.files:
        problem = ValidationProblem("a 'file' part is required", [{"loc": "file", "msg": "field required"}])
    elif kind not in {k.value for k in FileKind}:
        problem = ValidationProblem("kind must be 'model' or 'data'", [{"loc": "kind", "msg": "must be model|data"}])
    if problem is not None:
        await discard_files(state.storage, form)
        raise problem

    def save() -> FileInfo:
        with state.db.sessionmaker() as session:
            return service.save_upload(session, state.settings, key.name, form.files["file"], FileKind(kind))

    try:
        return await to_thread.run_sync(save)
    except BaseException:
        await discard_files(state.storage, form)
        raise


@router.get("", response_model=FileList)
def list_files(
    session: SessionDep,
    state: StateDep,
    key: CurrentKey,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> FileList:
    """The caller's files, newest first, each with when it expires and whether a queued or running job uses it."""
    return service.list_files(session, state.settings, key.name, limit, cursor)


@router.get("/{file_id}", response_model=FileInfo, responses=problem_responses(404))
def get_file(rec: OwnedFile, session: SessionDep, state: StateDep) -> FileInfo:
    """A file's metadata."""
    return service.describe(session, state.settings, rec)


@router.delete("/{file_id}", status_code=204, responses=problem_responses(404, 409))
def delete_file(rec: OwnedFile, session: SessionDep, state: StateDep) -> Response:
    """Delete a file and free its bytes of the quota; 409 while a queued or running job uses it."""
    service.delete_file(session, state.storage, rec)
    return Response(status_code=204)
