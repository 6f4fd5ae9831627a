"""Client library for a prunekit server; needs only httpx and pydantic (no torch, no server stack).

Job, event and problem bodies are parsed into the API's own models (prunekit/spec/api.py), re-exported here.
"""

from prunekit.client.client import (
    DEFAULT_SERVER,
    ENV_API_KEY,
    ENV_SERVER,
    DownloadResult,
    PrunekitClient,
    RetryPolicy,
    new_idempotency_key,
)
from prunekit.client.errors import (
    ApiError,
    AuthError,
    ConflictError,
    IdempotencyMismatchError,
    IntegrityError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    PrunekitError,
    RateLimitedError,
    RequestError,
    ServerError,
    UnreachableError,
    ValidationError,
    WaitTimeoutError,
)
from prunekit.client.types import FileInfo
from prunekit.spec.api import TERMINAL_STATUSES, Event, EventList, Job, JobList, JobStatus, Problem

__all__ = [
    "DEFAULT_SERVER",
    "ENV_API_KEY",
    "ENV_SERVER",
    "TERMINAL_STATUSES",
    "ApiError",
    "AuthError",
    "ConflictError",
    "DownloadResult",
    "Event",
    "EventList",
    "FileInfo",
    "IdempotencyMismatchError",
    "IntegrityError",
    "Job",
    "JobList",
    "JobStatus",
    "NotFoundError",
    "NotReadyError",
    "PayloadTooLargeError",
    "Problem",
    "PrunekitClient",
    "PrunekitError",
    "RateLimitedError",
    "RequestError",
    "RetryPolicy",
    "ServerError",
    "UnreachableError",
    "ValidationError",
    "WaitTimeoutError",
    "new_idempotency_key",
]
