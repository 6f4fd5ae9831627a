"""Exceptions of the prunekit client; HTTP problems (RFC 9457) map to a few types a caller can act on."""

from __future__ import annotations

from typing import Any

from prunekit.client.types import Job


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
    """The server answered with an error status; fields come from its problem+json body."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str = "",
        errors: list[dict[str, Any]] | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.errors: list[dict[str, Any]] = list(errors or [])
        self.problem: dict[str, Any] = dict(problem or {})
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"{self.status} {self.code}: {self.detail or self.title}"
        if self.errors:
            text += "; " + "; ".join(f"{e.get('loc') or '<root>'}: {e.get('msg', '')}" for e in self.errors)
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


def error_from_problem(status: int, problem: dict[str, Any] | None, text: str = "") -> ApiError:
    """Build the matching ApiError from a status code and a (possibly absent) problem+json body."""
    body = problem or {}
    code = str(body.get("code") or _default_code(status))
    title = str(body.get("title") or _default_title(status))
    detail = str(body.get("detail") or text.strip()[:500])
    raw_errors = body.get("errors")
    errors = [e for e in raw_errors if isinstance(e, dict)] if isinstance(raw_errors, list) else []
    cls: type[ApiError]
    if status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFoundError
    elif status == 413:
        cls = PayloadTooLargeError
    elif status == 409:
        cls = NotReadyError if code == "not_ready" else ConflictError
    elif status == 422 and code == "idempotency_mismatch":
        cls = IdempotencyMismatchError
    elif status in (400, 422):
        cls = ValidationError
    elif status == 429:
        cls = RateLimitedError
    elif status >= 500:
        cls = ServerError
    else:
        cls = RequestError
    return cls(status, code, title, detail, errors, body)


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
