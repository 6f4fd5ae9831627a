"""The jobs page for browsers (rendered by prunekit.reporting.jobs_page when installed), and its sign-in."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Cookie, Depends, Form, Header, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.core.auth import Principal
from service.core.deps import SESSION_COOKIE, SessionDep, StateDep, browser_key
from service.core.errors import Forbidden, NotImplementedProblem, Unauthorized, problem_responses
from service.ui import service
from service.ui.pages import login_page

router = APIRouter(tags=["ui"])


async def _browser_caller(
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
    cookie: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
) -> Principal | Unauthorized:
    # The jobs page answers an unknown caller with its sign-in form, not a problem body: keep the refusal.
    try:
        return await browser_key(state, authorization, cookie)
    except Unauthorized as exc:
        return exc


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
    caller: Annotated[Principal | Unauthorized, Depends(_browser_caller)],
    before: Annotated[str | None, Query(description="Cursor: the page of older jobs.")] = None,
    after: Annotated[str | None, Query(description="Cursor: the page of newer jobs.")] = None,
    authorization: Annotated[str | None, Header()] = None,
    cookie: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
) -> HTMLResponse:
    """One page of the caller's jobs, newest first; the sign-in form (401) when the browser has no session."""
    if isinstance(caller, Unauthorized):
        return HTMLResponse(login_page(caller.detail if cookie else None), status_code=401)
    try:
        from prunekit.reporting.jobs_page import Pager, render_jobs_page
    except ImportError:
        raise NotImplementedProblem("this server has no HTML renderer installed") from None
    page = service.jobs_page(session, caller.name, before, after)
    pager = Pager(
        newer=f"/ui?after={page.newer}" if page.newer else None,
        older=f"/ui?before={page.older}" if page.older else None,
        newest=None if page.first else "/ui",
    )
    signed_in = None if state.keys.disabled or authorization else caller.name
    return HTMLResponse(render_jobs_page(page.jobs, signed_in_as=signed_in, pager=pager))


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
