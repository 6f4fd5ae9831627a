"""Typed FastAPI dependencies: the session, the caller, and the caller's own jobs and files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from service.core.auth import Principal
from service.core.errors import NotFound
from service.core.models import FileRecord, JobRecord
from service.core.state import AppState
from service.files import repository as files_repo
from service.jobs import repository as jobs_repo


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.prunekit
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    # Services commit explicitly; whatever is left uncommitted is rolled back here.
    with state.db.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def current_key(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> Principal:
    return state.keys.authenticate(authorization)


CurrentKey = Annotated[Principal, Depends(current_key)]


def owned_job(job_id: str, session: SessionDep, key: CurrentKey) -> JobRecord:
    """The caller's job, or 404 (another key's job is indistinguishable from a missing one)."""
    job = jobs_repo.get_job(session, job_id, key.name)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


OwnedJob = Annotated[JobRecord, Depends(owned_job)]


def owned_file(file_id: str, session: SessionDep, key: CurrentKey) -> FileRecord:
    rec = files_repo.get_file(session, file_id, key.name)
    if rec is None:
        raise NotFound(f"no file {file_id}")
    return rec


OwnedFile = Annotated[FileRecord, Depends(owned_file)]
