"""Typed FastAPI dependencies: the session, the caller, and the caller's own jobs and files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

from anyio import to_thread
from fastapi import Cookie, Depends, Header, Request
from sqlalchemy.orm import Session

from jobstore.models import FileRecord, JobRecord, UploadSessionRecord
from jobstore.repositories import files as files_repo
from jobstore.repositories import jobs as jobs_repo
from jobstore.repositories import uploads as uploads_repo
from service.core.auth import Principal
from service.core.errors import NotFound
from service.core.state import AppState

T = TypeVar("T")


# The dependencies that do no I/O are `async def`: FastAPI runs a sync one in a worker thread, and each such hop
# cost more than the work itself under load (see docs/benchmarks.md, the status endpoint profile).
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.prunekit
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    # Services commit explicitly; whatever is left uncommitted is rolled back here.
    with state.db.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def current_key(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> Principal:
    return state.keys.authenticate(authorization)


CurrentKey = Annotated[Principal, Depends(current_key)]

SESSION_COOKIE = "prunekit_session"


async def browser_key(
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
    session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
) -> Principal:
    """The caller of a read-only page: a Bearer key, else the jobs page's session cookie.

    Only GET routes that change nothing take the cookie (it is SameSite=Strict as well), so a cookie cannot be
    used to submit, cancel or delete anything.
    """
    if authorization or not session:
        return state.keys.authenticate(authorization)
    return state.keys.authenticate_session(session)


BrowserKey = Annotated[Principal, Depends(browser_key)]


def owned_job(job_id: str, session: SessionDep, key: CurrentKey) -> JobRecord:
    """The caller's job, or 404 (another key's job is indistinguishable from a missing one)."""
    job = jobs_repo.get_job(session, job_id, key.name)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


OwnedJob = Annotated[JobRecord, Depends(owned_job)]


def read_owned_job(state: AppState, job_id: str, key: Principal, view: Callable[[JobRecord], T]) -> T:
    """owned_job for hot read-only polls: one autocommit query (no BEGIN/ROLLBACK), then `view` of the job."""
    with state.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        job = jobs_repo.read_job(conn, job_id, key.name)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return view(job)


async def read_owned_job_async(state: AppState, job_id: str, key: Principal, view: Callable[[JobRecord], T]) -> T:
    """read_owned_job without a thread hop: on the loop's async engine (PostgreSQL), else in a worker thread."""
    engine = state.db.async_engines.get()
    if engine is None:  # SQLite, or an app whose lifespan did not run in this loop
        return await to_thread.run_sync(read_owned_job, state, job_id, key, view)
    async with engine.connect() as conn:
        job = await jobs_repo.read_job_async(conn, job_id, key.name)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return view(job)


def browser_owned_job(job_id: str, session: SessionDep, key: BrowserKey) -> JobRecord:
    """owned_job for read-only pages a browser opens from the jobs page (report, artifact)."""
    return owned_job(job_id, session, key)


BrowserOwnedJob = Annotated[JobRecord, Depends(browser_owned_job)]


def owned_file(file_id: str, session: SessionDep, key: CurrentKey) -> FileRecord:
    rec = files_repo.get_file(session, file_id, key.name)
    if rec is None:
        raise NotFound(f"no file {file_id}")
    return rec


OwnedFile = Annotated[FileRecord, Depends(owned_file)]


def owned_upload(upload_id: str, state: StateDep, key: CurrentKey) -> UploadSessionRecord:
    """The caller's resumable upload, or 404; read in a session of its own, closed before a chunk's body is read."""
    with state.db.sessionmaker() as session:
        rec = uploads_repo.get_upload(session, upload_id, key.name)
        if rec is None:
            raise NotFound(f"no upload {upload_id}")
        session.expunge(rec)  # a snapshot: changes go through the service, under the row's lock
    return rec


OwnedUpload = Annotated[UploadSessionRecord, Depends(owned_upload)]
