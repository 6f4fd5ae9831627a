"""The sign-in page of the jobs page: plain HTML, no assets, nothing that needs the report renderer."""

from __future__ import annotations

from html import escape

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem;color:#1f2933}"
    "h1{font-size:1.4rem}label{display:block;margin:1rem 0 .3rem}input{width:100%;padding:.5rem;"
    "box-sizing:border-box}button{margin-top:1rem;padding:.5rem 1rem}.error{color:#b42318}.muted{color:#616e7c}"
)


def login_page(message: str | None = None) -> str:
    """A form that trades an API key for a session cookie (POST /ui/login)."""
    error = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>prunekit: sign in</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head><body>'
        f"<h1>prunekit jobs</h1>{error}"
        '<form method="post" action="/ui/login">'
        '<label for="api_key">API key</label>'
        '<input id="api_key" name="api_key" type="password" autocomplete="current-password" required autofocus>'
        '<button type="submit">Sign in</button></form>'
        '<p class="muted">The key is checked once; the browser then keeps a signed session cookie that only opens '
        "this page, reports and artifacts. Jobs are submitted with the <code>prunekit</code> client.</p>"
        "</body></html>"
    )
