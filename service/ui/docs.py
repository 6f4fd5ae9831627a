"""/docs (Swagger UI) and /redoc served with their scripts from the package, so they work without internet."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/static/docs"
# fastapi-offline ships Swagger UI 5 and ReDoc 2 (MIT; Swagger UI itself is Apache-2.0); only its files are used.
ASSETS = Path(str(files("fastapi_offline") / "static"))
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False)


def docs_csp(html: str) -> str:
    """A CSP that runs the page's own inline scripts (by hash) and scripts from this server, nothing else."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in _INLINE_SCRIPT.findall(html)
    )
    # Both UIs set inline styles and draw data:/blob: images; ReDoc runs its search in a blob: worker.
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    )


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["content-security-policy"] = docs_csp(bytes(response.body).decode())
    response.headers["x-frame-options"] = "DENY"
    return response


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for this API (no OAuth2 redirect page: the API takes bearer keys only)."""
    root = request.scope.get("root_path", "")
    return _page(
        get_swagger_ui_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title}: API docs",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            oauth2_redirect_url=None,
        )
    )


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    """ReDoc for this API, without the Google fonts FastAPI would load."""
    root = request.scope.get("root_path", "")
    return _page(
        get_redoc_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title}: API reference",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
    )


def install_docs(app: FastAPI) -> None:
    """Serve the assets under STATIC_URL and the two pages (the app must be built with docs_url=None)."""
    app.mount(STATIC_URL, StaticFiles(directory=ASSETS), name="docs-static")
    app.include_router(router)
