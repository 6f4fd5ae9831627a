"""One page of the jobs page: its jobs and the cursors of the pages around it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from jobstore.repositories import jobs as repository
from jobstore.views import job_view
from service.jobs.service import decode_cursor, encode_cursor

PAGE_SIZE = 50


@dataclass(frozen=True)
class JobsPage:
    """The jobs (API bodies, newest first), the cursors for ?before= (older) and ?after= (newer), and whether
    this is the first page."""

    jobs: list[dict[str, Any]]
    older: str | None
    newer: str | None
    first: bool


def jobs_page(session: Session, owner: str, before: str | None, after: str | None, size: int | None = None) -> JobsPage:
    """The page of `owner`'s jobs below the `before` cursor, above the `after` cursor, or the newest ones."""
    size = size or PAGE_SIZE
    if after is not None:
        rows = repository.list_newer_jobs(session, owner, size + 1, decode_cursor(after))
        if not rows:  # nothing newer any more (the jobs were deleted): the newest jobs instead
            return jobs_page(session, owner, None, None, size)
        has_newer = len(rows) > size
        rows = rows[1:] if has_newer else rows
        newer = encode_cursor(rows[0].pk) if has_newer else None
        return JobsPage(_bodies(rows), encode_cursor(rows[-1].pk), newer, first=not has_newer)
    before_pk = decode_cursor(before) if before else None
    rows = repository.list_jobs(session, owner, None, size + 1, before_pk)
    older = encode_cursor(rows[size - 1].pk) if len(rows) > size else None
    rows = rows[:size]
    newer = encode_cursor(rows[0].pk) if before_pk is not None and rows else None
    return JobsPage(_bodies(rows), older, newer, first=before_pk is None)


def _bodies(rows: Any) -> list[dict[str, Any]]:
    return [job_view(j).model_dump(mode="json") for j in rows]
