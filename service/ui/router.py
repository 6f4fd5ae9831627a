"""The jobs page for browsers (rendered by prunekit.reporting.html when installed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from service.core.deps import CurrentKey, SessionDep
from service.core.errors import NotImplementedProblem
from service.jobs import repository
from service.jobs.schemas import JobOut

router = APIRouter(tags=["ui"])


@router.get("/ui", response_class=HTMLResponse)
def jobs_page(session: SessionDep, key: CurrentKey) -> HTMLResponse:
    """The caller's latest jobs as an HTML page."""
    try:
        from prunekit.reporting.html import render_jobs_page
    except ImportError:
        raise NotImplementedProblem("this server has no HTML renderer installed") from None
    jobs = [JobOut.of(j).model_dump(mode="json") for j in repository.list_jobs(session, key.name, None, 100, None)]
    return HTMLResponse(render_jobs_page(jobs))
