"""HTTP routes of /v1/jobs: parse the request, authorize, hand over to the service module."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Annotated, Any, get_args

from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import ValidationError

from jobstore.models import PK_MAX, JobRecord
from jobstore.repositories import jobs as repository
from jobstore.storage import ObjectMissing
from jobstore.views import event_view, job_view
from prunekit.spec import JobSpec, SpecError
from prunekit.spec.api import EventList, Job, JobList, JobStatus, WebhookEventType
from prunekit.spec.loading import MAX_NESTING, check_nesting
from service.core.deps import BrowserOwnedJob, CurrentKey, OwnedJob, SessionDep, StateDep, read_owned_job_async
from service.core.errors import (
    NotImplementedProblem,
    NotReady,
    PayloadTooLarge,
    RangeNotSatisfiable,
    StoredObjectCorrupt,
    UnsupportedMediaType,
    ValidationProblem,
    problem_responses,
)
from service.core.multipart import MultipartForm, discard_files, receive_multipart
from service.core.state import AppState
from service.jobs import event_stream, service
from service.jobs.schemas import (
    METADATA_MAX_PAIRS,
    JobCreate,
    parse_meta_filter,
    parse_metadata_text,
    parse_webhook_events_text,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problem_responses(401, 422))

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]

# The app adds JobSpec (prunekit/spec/job.py) to the document's components; JobCreate.spec is a plain dict only
# because the service parses it itself (parse_spec_or_422) to answer with the spec's own error locations.
_JOB_SPEC_REF = {"$ref": "#/components/schemas/JobSpec"}
_SUBMIT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    **JobCreate.model_json_schema(),
                    "properties": {**JobCreate.model_json_schema()["properties"], "spec": _JOB_SPEC_REF},
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["spec"],
                    "additionalProperties": False,
                    "description": "Exactly one of `model` / `model_file_id`; at most one of `data` / `data_file_id`.",
                    "oneOf": [{"required": ["model"]}, {"required": ["model_file_id"]}],
                    "properties": {
                        "spec": {**_JOB_SPEC_REF, "description": "The JobSpec as JSON (or YAML) text."},
                        "model": {"type": "string", "format": "binary"},
                        "model_file_id": {"type": "string"},
                        "data": {"type": "string", "format": "binary"},
                        "data_file_id": {"type": "string"},
                        "webhook_url": {"type": "string"},
                        "metadata": {"type": "string", "description": "JobCreate.metadata as a JSON object."},
                        "webhook_events": {"type": "string", "description": "Event types, comma-separated."},
                    },
                },
                "encoding": {"spec": {"contentType": "application/json, application/yaml, text/plain"}},
            },
        },
    }
}


def _check_nesting(raw: Any) -> None:
    """Bound each field's nesting before pydantic and the request hash see the body (both recurse per level)."""
    for name, value in raw.items() if isinstance(raw, dict) else [("body", raw)]:
        try:
            check_nesting(value)
        except SpecError as exc:
            msg = exc.errors[0]["msg"]
            raise ValidationProblem(f"{name}: {msg}", [{"loc": str(name), "msg": msg}]) from None


async def _json_submission(request: Request, state: AppState) -> service.Submission:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > state.settings.max_form_field_bytes:
            raise PayloadTooLarge(f"the JSON body is larger than {state.settings.max_form_field_bytes} bytes")
    try:
        raw = json.loads(body)
    except RecursionError:  # the decoder recurses once per level; far deeper than check_nesting allows
        raise ValidationProblem(
            f"the JSON body is nested deeper than {MAX_NESTING} levels", [{"loc": "body", "msg": "nested too deeply"}]
        ) from None
    except ValueError as exc:
        raise ValidationProblem(f"the body is not valid JSON: {exc}") from None
    _check_nesting(raw)
    try:
        req = JobCreate.model_validate(raw)
    except ValidationError as exc:
        raise _validation_problem(exc) from None
    spec = service.parse_spec_or_422(req.spec)
    hashed = req.model_dump(mode="json", exclude={"metadata"} if not req.metadata else None)
    if req.webhook_events is None:  # absent from the hash, as before the filter existed
        hashed.pop("webhook_events", None)
    return service.Submission(
        spec=spec,
        model_file_id=req.model_file_id,
        data_file_id=req.data_file_id,
        webhook_url=req.webhook_url,
        request_hash=service.canonical_hash(hashed),
        metadata=req.metadata,
        webhook_events=req.webhook_events,
    )


def _validation_problem(exc: ValidationError, *prefix: str) -> ValidationProblem:
    errors = [{"loc": ".".join([*prefix, *(str(p) for p in e["loc"])]), "msg": e["msg"]} for e in exc.errors()]
    return ValidationProblem("; ".join(f"{e['loc']}: {e['msg']}" for e in errors), errors)


def _form_metadata(form: MultipartForm) -> dict[str, str]:
    text = form.fields.get("metadata")
    if not text:
        return {}
    try:
        return parse_metadata_text(text)
    except ValidationError as exc:
        raise _validation_problem(exc, "metadata") from None


def _form_webhook_events(form: MultipartForm) -> list[WebhookEventType] | None:
    text = form.fields.get("webhook_events")
    if text is None:
        return None
    try:
        return parse_webhook_events_text(text)
    except ValidationError as exc:
        raise _validation_problem(exc, "webhook_events") from None


def _multipart_submission(form: MultipartForm) -> service.Submission:
    if "spec" not in form.fields:
        raise ValidationProblem("a 'spec' field is required", [{"loc": "spec", "msg": "field required"}])
    for name in ("model", "data"):
        if name in form.files and f"{name}_file_id" in form.fields:
            raise ValidationProblem(
                f"give either a '{name}' file or '{name}_file_id', not both",
                [{"loc": name, "msg": f"conflicts with {name}_file_id"}],
            )
    if "model" not in form.files and "model_file_id" not in form.fields:
        raise ValidationProblem("a 'model' file or 'model_file_id' is required", [{"loc": "model", "msg": "required"}])
    spec = service.parse_spec_or_422(form.fields["spec"])
    metadata = _form_metadata(form)
    model, data = form.files.get("model"), form.files.get("data")
    fingerprint: dict[str, Any] = {
        "spec": form.fields["spec"],
        "model": model.sha256 if model else form.fields.get("model_file_id"),
        "data": data.sha256 if data else form.fields.get("data_file_id"),
        "webhook_url": form.fields.get("webhook_url"),
    }
    if metadata:  # absent when empty: a submission without metadata keeps the hash it had before metadata existed
        fingerprint["metadata"] = metadata
    webhook_events = _form_webhook_events(form)
    if webhook_events is not None:
        fingerprint["webhook_events"] = webhook_events
    return service.Submission(
        spec=spec,
        model_file_id=form.fields.get("model_file_id"),
        data_file_id=form.fields.get("data_file_id"),
        webhook_url=form.fields.get("webhook_url") or None,
        request_hash=service.canonical_hash(fingerprint),
        inline_model=model,
        inline_data=data,
        metadata=metadata,
        webhook_events=webhook_events,
    )


@router.post(
    "", status_code=202, response_model=Job, openapi_extra=_SUBMIT_DOC, responses=problem_responses(413, 415, 429)
)
async def submit_job(
    request: Request, response: Response, state: StateDep, key: CurrentKey, idempotency_key: IdempotencyKey = None
) -> Job:
    """Submit a job: JSON with file ids, or multipart with the model (and data) inline."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    form: MultipartForm | None = None
    if ctype == "application/json":
        sub = await _json_submission(request, state)
    elif ctype == "multipart/form-data":
        form = await receive_multipart(
            request,
            state.storage,
            file_fields={"model", "data"},
            text_fields={"spec", "model_file_id", "data_file_id", "webhook_url", "metadata", "webhook_events"},
            max_file_bytes=state.settings.max_upload_bytes,
            max_field_bytes=state.settings.max_form_field_bytes,
        )
        try:
            sub = _multipart_submission(form)
        except BaseException:
            await discard_files(state.storage, form)
            raise
    else:
        raise UnsupportedMediaType(f"send application/json or multipart/form-data, not '{ctype or 'nothing'}'")

    def create() -> tuple[Job, bool]:
        with state.db.sessionmaker() as session:
            job, created = service.create_job(session, state.settings, key.name, sub, idempotency_key)
            if created:
                service.enqueue(session, state.broker, job)
            return job_view(job), created

    try:
        out, created = await to_thread.run_sync(create)
    except BaseException:
        if form is not None:
            await discard_files(state.storage, form)
        raise
    if not created and form is not None:
        await discard_files(state.storage, form)  # the earlier identical request already stored its own
    response.headers["Location"] = out.links.self
    return out


_JOB_KINDS = frozenset(get_args(JobSpec.model_fields["kind"].annotation))


def _list_filter(status: list[JobStatus] | None, kind: str | None, meta: list[str] | None) -> repository.JobFilter:
    if kind is not None and kind not in _JOB_KINDS:
        raise ValidationProblem(f"unknown kind '{kind[:40]}'", [{"loc": "kind", "msg": f"one of {sorted(_JOB_KINDS)}"}])
    if len(meta or []) > METADATA_MAX_PAIRS:
        msg = f"at most {METADATA_MAX_PAIRS} meta filters"
        raise ValidationProblem(msg, [{"loc": "meta", "msg": msg}])
    pairs = []
    for raw in meta or []:
        try:
            pairs.append(parse_meta_filter(raw))
        except ValueError as exc:
            raise ValidationProblem(f"meta: {exc}", [{"loc": "meta", "msg": str(exc)}]) from None
    return repository.JobFilter(statuses=tuple(status or ()), kind=kind, metadata=tuple(pairs))


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    key: CurrentKey,
    status: Annotated[list[JobStatus] | None, Query(description="Any of these statuses (repeatable).")] = None,
    kind: Annotated[str | None, Query(description="Only jobs of this kind (compress, sweep ...).")] = None,
    meta: Annotated[
        list[str] | None, Query(description="A metadata pair `key:value`; repeatable, every pair must match.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> JobList:
    """The caller's jobs, newest first, filtered by status, kind and metadata pairs."""
    filters = _list_filter(status, kind, meta)
    before = service.decode_cursor(cursor) if cursor else None
    rows = repository.list_jobs(session, key.name, filters, limit + 1, before)
    items = [job_view(j) for j in rows[:limit]]
    next_cursor = service.encode_cursor(rows[limit - 1].pk) if len(rows) > limit else None
    return JobList(items=items, next_cursor=next_cursor)


@router.get("/{job_id}", response_model=Job, responses=problem_responses(404))
async def get_job(job_id: str, state: StateDep, key: CurrentKey) -> Response:
    """A job's status, progress, error and links."""
    # CI fleets and the jobs page poll this (docs/benchmarks.md): one query on the loop, and the Job built here
    # is serialized once; response_model=Job only documents it (FastAPI would validate and encode it again).
    # A cached body is dropped the moment the job's change notification arrives (jobstore/job_changes.py).
    cache = state.status_caches.get()
    body = cache.get(job_id, key.name) if cache is not None else None
    if body is None:
        token = cache.token() if cache is not None else 0
        body = (await read_owned_job_async(state, job_id, key, job_view)).model_dump_json().encode()
        if cache is not None:
            cache.put(job_id, key.name, body, token)
    return Response(content=body, media_type="application/json")


@router.post("/{job_id}/cancel", status_code=202, response_model=Job, responses=problem_responses(404, 409))
def cancel_job(job: OwnedJob, session: SessionDep, state: StateDep) -> Job:
    """Cancel: a queued job at once, a running one within seconds."""
    cancelled = service.cancel_job(session, state.broker, job)
    state.status_caches.invalidate(job.id)  # read-your-writes in this process, ahead of the notification
    return job_view(cancelled)


@router.delete("/{job_id}", status_code=204, responses=problem_responses(404, 409))
def delete_job(job: OwnedJob, session: SessionDep, state: StateDep) -> Response:
    """Remove a finished job, its artifact, report and inline uploads."""
    service.delete_job(session, state.storage, job)
    state.status_caches.invalidate(job.id)
    return Response(status_code=204)


_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _byte_pos(digits: str) -> int:
    """A position from a Range header; int() refuses over 4300 digits, and anything past 19 is past every file."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else 10**19


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One byte range as (start, end inclusive); None to serve the whole file."""
    m = _RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multiple or malformed ranges: RFC 9110 lets us ignore Range
    if not m.group(1):
        length = _byte_pos(m.group(2))
        if length == 0:
            raise RangeNotSatisfiable("empty suffix range", headers={"Content-Range": f"bytes */{size}"})
        return max(size - length, 0), size - 1
    start = _byte_pos(m.group(1))
    end = _byte_pos(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(f"range {header} outside 0-{size - 1}", headers={"Content-Range": f"bytes */{size}"})
    return start, min(end, size - 1)


@router.get(
    "/{job_id}/artifact",
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "One byte range", "content": {"application/octet-stream": {}}},
        304: {"description": "Not modified (If-None-Match)"},
        **problem_responses(404, 409, 416),
    },
)
def get_artifact(
    job: BrowserOwnedJob,
    state: StateDep,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_range: Annotated[str | None, Header(alias="If-Range")] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """The pruned model, with a sha256 ETag and byte ranges."""
    if job.status != JobStatus.SUCCEEDED or job.artifact_key is None:
        raise NotReady(f"job {job.id} is {job.status}; its artifact exists once it has succeeded")
    size = job.artifact_size or 0
    etag = f'"{job.artifact_sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{job.artifact_name}"',
    }
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    _check_stored_artifact(job, state)  # after the 304: a conditional GET sends no body, so nothing to verify
    rng = None
    if range_header and (if_range is None or if_range.strip() == etag):
        rng = _parse_range(range_header, size)
    try:
        if rng is None:
            body = state.storage.iter_range(job.artifact_key)
            return StreamingResponse(
                body, media_type="application/octet-stream", headers={**headers, "Content-Length": str(size)}
            )
        start, end = rng
        body = state.storage.iter_range(job.artifact_key, start, end)
    except ObjectMissing:
        raise NotReady(f"the artifact of job {job.id} is missing from storage") from None
    headers.update({"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(end - start + 1)})
    return StreamingResponse(body, status_code=206, media_type="application/octet-stream", headers=headers)


def _check_stored_artifact(job: Any, state: AppState) -> None:
    # Before any byte goes out: a replaced or truncated object must fail cleanly, never as a short or foreign body.
    try:
        stored_size = state.storage.size(job.artifact_key)
        digest = hashlib.sha256()
        if stored_size == job.artifact_size:
            for chunk in state.storage.iter_range(job.artifact_key):
                digest.update(chunk)
    except ObjectMissing:
        raise NotReady(f"the artifact of job {job.id} is missing from storage") from None
    if stored_size != job.artifact_size or digest.hexdigest() != job.artifact_sha256:
        log.error("artifact of job %s does not match its record (size %s, recorded %s)", job.id, stored_size,
                  job.artifact_size)  # fmt: skip
        raise StoredObjectCorrupt(
            f"the stored artifact of job {job.id} does not match its recorded size and sha256; nothing was sent"
        )


def _require_report(job: JobRecord) -> str:
    """The report's storage key; 409 until the job has succeeded."""
    if job.status != JobStatus.SUCCEEDED or job.report_key is None:
        raise NotReady(f"job {job.id} is {job.status}; its report exists once it has succeeded")
    return job.report_key


def _read_report(job: JobRecord, state: AppState) -> dict[str, Any]:
    key = _require_report(job)
    try:
        data = b"".join(state.storage.iter_range(key))
    except ObjectMissing:
        raise NotReady(f"the report of job {job.id} is missing from storage") from None
    report: dict[str, Any] = json.loads(data)
    return report


@router.get("/{job_id}/report", responses=problem_responses(404, 409))
def get_report(job: BrowserOwnedJob, state: StateDep) -> dict[str, Any]:
    """The report JSON (see prunekit/spec/report.py)."""
    return _read_report(job, state)


@router.get("/{job_id}/report.html", response_class=HTMLResponse, responses=problem_responses(404, 409, 501))
def get_report_html(job: BrowserOwnedJob, state: StateDep) -> Response:
    """The report as one self-contained HTML page: the one the worker stored, rendered here only for old jobs."""
    _require_report(job)
    if job.report_html_key is not None:
        try:
            page = b"".join(state.storage.iter_range(job.report_html_key))
        except ObjectMissing:
            log.warning("job %s: stored report.html is missing; rendering it again", job.id)
        else:
            return HTMLResponse(page)
    try:
        from prunekit.reporting.html import render_report_html
    except ImportError:
        raise NotImplementedProblem("this server has no HTML report renderer installed") from None
    return HTMLResponse(render_report_html(_read_report(job, state), job_id=job.id))


_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The events as JSON, or with `Accept: text/event-stream` a live stream of SSE frames "
        "(`id: <seq>`, `event: <kind>`, `data: <Event>`) that ends with an `end` frame once the job has ended.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def _start_seq(after: int, cursor: str | None, last_event_id: str | None) -> int:
    """Where the events start: Last-Event-ID (a reconnecting stream), else the cursor, else `after`."""
    if last_event_id is not None:
        value = last_event_id.strip()
        if not value.isdigit() or len(value) > 19 or int(value) > PK_MAX:
            msg = "Last-Event-ID must be the seq of an event"
            raise ValidationProblem(msg, [{"loc": "Last-Event-ID", "msg": msg}])
        return int(value)
    return service.decode_cursor(cursor) if cursor else after


@router.get("/{job_id}/events", response_model=EventList, responses={**_SSE_DOC, **problem_responses(404)})
def get_events(
    job: OwnedJob,
    session: SessionDep,
    state: StateDep,
    after: Annotated[int, Query(ge=0, le=PK_MAX)] = 0,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventList | Response:
    """Progress, log and per-epoch metric events after `after` (or `cursor`); live as SSE on request."""
    start = _start_seq(after, cursor, last_event_id)
    if event_stream.wants_stream(accept):
        # The stream polls with short sessions of its own: give this request's connection back now.
        session.close()
        s = state.settings
        return event_stream.response(state.db, job.id, start, s.events_poll_interval, s.events_keepalive)
    rows = repository.list_events(session, job.id, start, limit)
    items = [event_view(e) for e in rows]
    last = items[-1].seq if items else start
    next_cursor = service.encode_cursor(last) if len(items) == limit else None
    return EventList(items=items, next_cursor=next_cursor, next_after=last)
