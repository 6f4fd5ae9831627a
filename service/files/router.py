"""HTTP routes of /v1/files."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Request

from service.core.deps import CurrentKey, OwnedFile, StateDep
from service.core.errors import ValidationProblem, problem_responses
from service.core.multipart import discard_files, receive_multipart
from service.files import service
from service.files.schemas import FileOut

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
                        "kind": {"type": "string", "enum": ["model", "data"], "default": "model"},
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


@router.post(
    "", status_code=201, response_model=FileOut, openapi_extra=_UPLOAD_DOC, responses=problem_responses(413, 415)
)
async def upload_file(request: Request, state: StateDep, key: CurrentKey) -> FileOut:
    """Upload a model or dataset once (streamed, size-capped, sha256 computed on the way)."""
    form = await receive_multipart(
        request,
        state.storage,
        file_fields={"file"},
        text_fields={"kind"},
        max_file_bytes=state.settings.max_upload_bytes,
        max_field_bytes=state.settings.max_form_field_bytes,
    )
    kind = form.fields.get("kind", "model")
    problem: ValidationProblem | None = None
    if "file" not in form.files:
        problem = ValidationProblem("a 'file' part is required", [{"loc": "file", "msg": "field required"}])
    elif kind not in ("model", "data"):
        problem = ValidationProblem("kind must be 'model' or 'data'", [{"loc": "kind", "msg": "must be model|data"}])
    if problem is not None:
        await discard_files(state.storage, form)
        raise problem

    def save() -> FileOut:
        with state.db.sessionmaker() as session:
            rec = service.record_upload(session, key.name, form.files["file"], kind)
            session.commit()
            return FileOut.of(rec)

    try:
        return await to_thread.run_sync(save)
    except BaseException:
        await discard_files(state.storage, form)
        raise


@router.get("/{file_id}", response_model=FileOut, responses=problem_responses(404))
def get_file(rec: OwnedFile) -> FileOut:
    """A file's metadata."""
    return FileOut.of(rec)
