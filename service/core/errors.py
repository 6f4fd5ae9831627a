"""The service's explicit error types and their one mapping to RFC 9457 problem responses."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobstore.db import is_transient

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://prunekit.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemError(Exception):
    """Base of errors that become a problem response; subclasses fix status, code and title."""

    status = 500
    code = "internal"
    title = "Internal server error"

    def __init__(
        self, detail: str, errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class ValidationProblem(ProblemError):
    status, code, title = 422, "validation_error", "The request is invalid"


class NotFound(ProblemError):
    status, code, title = 404, "not_found", "Not found"


class Unauthorized(ProblemError):
    status, code, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ProblemError):
    status, code, title = 403, "forbidden", "Forbidden"


class PayloadTooLarge(ProblemError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class Conflict(ProblemError):
    status, code, title = 409, "conflict", "Conflict"


class IdempotencyMismatch(ProblemError):
    status, code, title = 422, "idempotency_mismatch", "Idempotency key reused with a different request"


class NotReady(ProblemError):
    status, code, title = 409, "not_ready", "Not available yet"


class InvalidState(ProblemError):
    status, code, title = 409, "invalid_state", "Not allowed in the job's current state"


class UnsupportedMediaType(ProblemError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class RangeNotSatisfiable(ProblemError):
    status, code, title = 416, "range_not_satisfiable", "Range not satisfiable"


class UploadOffsetMismatch(ProblemError):
    """A chunk that does not start where the upload stands; `Upload-Offset` says where that is."""

    status, code, title = 409, "upload_offset_mismatch", "The chunk does not start at the upload's offset"

    def __init__(self, detail: str, offset: int) -> None:
        super().__init__(detail, headers={"Upload-Offset": str(offset)})


class ChecksumMismatch(ProblemError):
    status, code, title = 422, "checksum_mismatch", "The received bytes do not match the announced sha256"


class StoredObjectCorrupt(ProblemError):
    status, code, title = 500, "stored_object_corrupt", "A stored object does not match its record"


class QuotaExceeded(ProblemError):
    status, code, title = 429, "quota_exceeded", "Quota exceeded"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class NotImplementedProblem(ProblemError):
    status, code, title = 501, "not_implemented", "Not available on this server"


# What each status means here; the one place the problem responses of the OpenAPI document are described.
_PROBLEM_DESCRIPTIONS = {
    400: "Bad request (problem details)",
    401: "Missing or unknown API key (problem details; `WWW-Authenticate: Bearer`)",
    403: "Forbidden (problem details)",
    404: "Not found, or owned by another key (problem details)",
    409: "Conflict: not ready yet or not allowed in the job's state (problem details)",
    413: "Payload too large (problem details)",
    415: "Unsupported media type (problem details)",
    416: "Range not satisfiable (problem details; `Content-Range: bytes */<size>`)",
    422: "The request is invalid (problem details; `errors` lists the fields)",
    429: "Over the API key's quota (problem details; `Retry-After` says when to try again)",
    500: "Internal server error (problem details)",
    501: "Not available on this server (problem details)",
    503: "The database is unreachable for a moment (problem details; `Retry-After`): retry",
}
PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses: application/problem+json bodies of the Problem schema."""
    return {
        status: {
            "description": _PROBLEM_DESCRIPTIONS[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}},
        }
        for status in statuses
    }


# Any operation can fail this way (the app documents it on every route); routers add their own statuses.
COMMON_PROBLEMS = problem_responses(500, 503)
DATABASE_RETRY_AFTER_SECONDS = 1


def problem_response(
    request: Request,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


def allowed_methods(request: Request) -> str:
    """Every method the app serves on the request's path (Starlette's 405 names only the first matching route)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), request.url.path):
            methods.update(m.upper() for m in operations if m in _HTTP_METHODS)
    return ", ".join(sorted(methods))


def install_problem_handlers(app: FastAPI) -> None:
    """Register the mapping from exceptions to problem responses (the only place it happens)."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(request, exc.status, exc.code, exc.title, exc.detail, exc.errors, exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            # Drop FastAPI's "body"/"query" prefix so paths read like the request's own fields.
            {"loc": ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0]), "msg": err["msg"]}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        return problem_response(request, 422, "validation_error", "The request is invalid", detail, errors)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return problem_response(request, exc.status_code, code, title, str(exc.detail), headers=headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a user error: log it with its traceback and say so plainly.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request,
            500,
            "internal",
            "Internal server error",
            f"unexpected {type(exc).__name__}; the server log has the details",
        )

    async def on_database(request: Request, exc: Exception) -> JSONResponse:
        if not is_transient(exc):
            return await on_unexpected(request, exc)
        # A dropped connection or a restarting server: the transaction was rolled back; retrying is safe (and a
        # submission whose commit did land is found again by its Idempotency-Key).
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
        detail = "the job database cannot be reached right now; retry the request shortly"
        return problem_response(request, 503, "database_unavailable", "Service unavailable", detail, headers=headers)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(SQLAlchemyError, on_database)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
