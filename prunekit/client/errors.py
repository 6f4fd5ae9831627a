"""Exceptions of the prunekit client; HTTP problems (RFC 9457) map to a few types a caller can act on."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import pydantic

from prunekit.spec.api import Job, Problem, ProblemFieldError


class PrunekitError(Exception):
    """Base class of every error the client raises."""


class UnreachableError(PrunekitError):
    """The server could not be reached (connection refused, DNS, timeouts), after retries."""


class IntegrityError(PrunekitError):
    """A download did not match the sha256 the server reported."""


class WaitTimeoutError(PrunekitError):
    """The job did not finish within the wait timeout; `job` is the last state seen."""

    def __init__(self, message: str, job: Job | None = None) -> None:
        super().__init__(message)
        self.job = job


class ApiError(PrunekitError):
    """The server answered with an error status; fields come from its problem+json body (`problem`)."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str = "",
        errors: list[ProblemFieldError] | None = None,
        problem: Problem | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.errors: list[ProblemFieldError] = list(errors or [])
        self.problem = problem
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"{self.status} {self.code}: {self.detail or self.title}"
        if self.errors:
            text += "; " + "; ".join(f"{e.loc or '<root>'}: {e.msg}" for e in self.errors)
        return text


class AuthError(ApiError):
    """401/403: missing or wrong API key."""


class NotFoundError(ApiError):
    """404: no such job or file (or it belongs to another key)."""


class RequestError(ApiError):
    """Another 4xx: the request cannot be done as sent."""


class ValidationError(RequestError):
    """422 validation_error; `errors` lists {loc, msg} with dotted field paths."""


class IdempotencyMismatchError(RequestError):
    """422 idempotency_mismatch: the Idempotency-Key was used before with another body."""


class PayloadTooLargeError(RequestError):
    """413: the upload is larger than the server accepts."""


class ConflictError(RequestError):
    """409: not possible in the job's current state (`code` says why)."""


class NotReadyError(ConflictError):
    """409 not_ready: the artifact or report does not exist yet."""


class ServerError(ApiError):
    """5xx after retries."""


class RateLimitedError(RequestError):
    """429 after retries: the server asks to come back later."""


def error_from_problem(status: int, body: Mapping[str, Any] | None, text: str = "") -> ApiError:
    """Build the matching ApiError from a status code and a (possibly absent or foreign) JSON body."""
    problem = parse_problem(status, body, text)
    cls = _error_class(status, problem.code)
    return cls(status, problem.code, problem.title, problem.detail, problem.errors, problem)


def parse_problem(status: int, body: Mapping[str, Any] | None, text: str = "") -> Problem:
    """The body as a Problem; one that is not (a proxy's error page, a bare JSON error) gets the status's defaults."""
    if body is not None:
        with contextlib.suppress(pydantic.ValidationError):
            return Problem.model_validate(body)
    raw = body or {}
    return Problem(
        type=str(raw.get("type") or "about:blank"),
        title=str(raw.get("title") or _default_title(status)),
        status=status,
        detail=str(raw.get("detail") or text.strip()[:500]),
        code=str(raw.get("code") or _default_code(status)),
        instance=str(raw.get("instance") or ""),
        errors=_field_errors(raw.get("errors")),
    )


def _field_errors(raw: Any) -> list[ProblemFieldError]:
    errors: list[ProblemFieldError] = []
    for item in raw if isinstance(raw, list) else []:
        with contextlib.suppress(pydantic.ValidationError):
            errors.append(ProblemFieldError.model_validate(item))
    return errors


def _error_class(status: int, code: str) -> type[ApiError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFoundError
    if status == 413:
        return PayloadTooLargeError
    if status == 409:
        return NotReadyError if code == "not_ready" else ConflictError
    if status == 422 and code == "idempotency_mismatch":
        return IdempotencyMismatchError
    if status in (400, 422):
        return ValidationError
    if status == 429:
        return RateLimitedError
    return ServerError if status >= 500 else RequestError


def _default_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        422: "validation_error",
        429: "rate_limited",
    }.get(status, "internal" if status >= 500 else f"http_{status}")


def _default_title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
