"""The jobs page for browsers (rendered by prunekit.reporting.html when installed), and its sign-in."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Cookie, Form, Header, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from jobstore.repositories import jobs as repository
from jobstore.views import job_view
from service.core.deps import SESSION_COOKIE, SessionDep, StateDep, browser_key
from service.core.errors import Forbidden, NotImplementedProblem, Unauthorized, problem_responses
from service.ui.pages import login_page

router = APIRouter(tags=["ui"])


@router.get(
    "/ui",
    response_class=HTMLResponse,
    responses={
        401: {"description": "The sign-in form", "content": {"text/html": {"schema": {"type": "string"}}}},
        **problem_responses(422, 501),
    },
)
def jobs_page(
    session: SessionDep,
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
    cookie: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
) -> HTMLResponse:
    """The caller's latest jobs as an HTML page; the sign-in form (401) when the browser has no session."""
    try:
        key = browser_key(state, authorization, cookie)
    except Unauthorized as exc:
        return HTMLResponse(login_page(exc.detail if cookie else None), status_code=401)
    try:
        from prunekit.reporting.html import render_jobs_page
    except ImportError:
        raise NotImplementedProblem("this server has no HTML renderer installed") from None
    jobs = [job_view(j).model_dump(mode="json") for j in repository.list_jobs(session, key.name, None, 100, None)]
    signed_in = None if state.keys.disabled or authorization else key.name
    return HTMLResponse(render_jobs_page(jobs, signed_in_as=signed_in))


@router.post("/ui/login", response_class=HTMLResponse, include_in_schema=False)
def login(request: Request, state: StateDep, api_key: Annotated[str, Form(max_length=1024)]) -> Response:
    """Check the key once and keep a signed session cookie (HttpOnly, SameSite=Strict)."""
    _require_same_origin(request)
    try:
        principal = state.keys.authenticate(f"Bearer {api_key}")
    except Unauthorized:
        return HTMLResponse(login_page("unknown API key"), status_code=401)
    ttl = int(state.settings.ui_session_hours * 3600)
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        state.keys.issue_session(principal, ttl),
        max_age=ttl,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/ui/logout", include_in_schema=False)
def logout(request: Request) -> Response:
    """Forget the session cookie."""
    _require_same_origin(request)
    response = RedirectResponse("/ui", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _require_same_origin(request: Request) -> None:
    # Forms posted from another site (login CSRF) carry its Origin; browsers send it on every POST.
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden(f"cross-origin form post from {origin} refused")
