"""Security headers on every response, and a strict CSP on the pages people open in a browser."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The jobs page, its sign-in form and reports: inline styles and data: images only, no script at all.
BROWSER_PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# same-origin, not no-referrer: with no-referrer Chromium sends `Origin: null` on the sign-in POST, which the
# same-origin check of /ui/login must refuse.
_ALWAYS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]
_BROWSER_PAGES = [(b"content-security-policy", BROWSER_PAGE_CSP.encode()), (b"x-frame-options", b"DENY")]


def is_browser_page(path: str) -> bool:
    """The routes that serve HTML of prunekit's own (not /docs and /redoc: service/ui/docs.py sets their CSP)."""
    return path == "/ui" or path.startswith("/ui/") or path.endswith("/report.html")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _ALWAYS + (_BROWSER_PAGES if is_browser_page(scope["path"]) else [])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in names)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
