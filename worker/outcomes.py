"""The one table from what stopped a job to its (status, error code, message) for the user."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from celery.exceptions import SoftTimeLimitExceeded

from jobstore.settings import Settings
from jobstore.storage import ObjectMissing
from prunekit.spec import SpecError
from prunekit.spec.api import ErrorCode, JobStatus
from worker.engine.errors import EngineError, JobCanceledError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: JobStatus  # FAILED or CANCELED
    code: ErrorCode | None
    message: str


def internal_error_message(job_id: str) -> str:
    """What users are told about a worker fault: prunekit's words only (never SQL, parameters or tokens)."""
    return f"internal error in the worker; the details are in the worker's log (reference {job_id})"


def _canceled(exc: BaseException, _: Settings) -> Outcome:
    return Outcome(JobStatus.CANCELED, None, str(exc) or "canceled")


def _engine(exc: BaseException, _: Settings) -> Outcome:
    err = cast(EngineError, exc)  # the table's key guarantees it
    code = ErrorCode(err.code) if err.code in ErrorCode.__members__.values() else ErrorCode.ENGINE_ERROR
    return Outcome(JobStatus.FAILED, code, err.message)


def _time_limit(_: BaseException, settings: Settings) -> Outcome:
    msg = f"the job ran longer than the server's limit of {settings.job_soft_time_limit} s and was stopped"
    return Outcome(JobStatus.FAILED, ErrorCode.TIME_LIMIT, msg)


def _spec(exc: BaseException, _: Settings) -> Outcome:
    return Outcome(JobStatus.FAILED, ErrorCode.INVALID_SPEC, str(exc))


def _missing(exc: BaseException, _: Settings) -> Outcome:
    msg = f"an input file is missing from storage ({exc}); upload it again"
    return Outcome(JobStatus.FAILED, ErrorCode.INPUT_MISSING, msg)


# First match wins: JobCanceledError is an EngineError.
OUTCOMES: tuple[tuple[type[BaseException], Callable[[BaseException, Settings], Outcome]], ...] = (
    (JobCanceledError, _canceled),
    (EngineError, _engine),
    (SoftTimeLimitExceeded, _time_limit),
    (SpecError, _spec),
    (ObjectMissing, _missing),
)


def outcome_of(exc: BaseException, job_id: str, settings: Settings) -> Outcome:
    """How a job (or trial) that raised `exc` ends; anything unlisted is our fault and is only logged."""
    for kind, make in OUTCOMES:
        if isinstance(exc, kind):
            return make(exc, settings)
    # A bug or an infrastructure failure, not the user's input: the full exception goes to the log only.
    log.error("job %s failed unexpectedly (reference %s)", job_id, job_id, exc_info=exc)
    return Outcome(JobStatus.FAILED, ErrorCode.INTERNAL_ERROR, internal_error_message(job_id))
