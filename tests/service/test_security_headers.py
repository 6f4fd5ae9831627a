"""Browser pages carry a strict CSP (no script at all), frame denial and nosniff; every response nosniff."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi.testclient import TestClient

from service.core.security_headers import BROWSER_PAGE_CSP
from tests.service.conftest import KEY_A


def _is_strict(headers: dict[str, str]) -> bool:
    csp = headers.get("content-security-policy", "")
    return csp == BROWSER_PAGE_CSP and "script-src" not in csp and headers.get("x-frame-options") == "DENY"


def test_the_jobs_page_and_its_sign_in_form_are_locked_down(client: TestClient) -> None:
    anonymous = TestClient(client.app)
    login = anonymous.get("/ui")
    assert login.status_code == 401 and _is_strict(login.headers)
    assert login.headers["x-content-type-options"] == "nosniff"
    signed_in = anonymous.post("/ui/login", data={"api_key": KEY_A}, follow_redirects=True)
    assert signed_in.status_code == 200 and _is_strict(signed_in.headers) and "<script" not in signed_in.text


def test_api_responses_are_nosniff_and_docs_keep_their_scripts(client: TestClient) -> None:
    r = client.get("/v1/jobs")
    assert r.headers["x-content-type-options"] == "nosniff" and "content-security-policy" not in r.headers
    docs = client.get("/docs")
    assert docs.status_code == 200 and "script-src 'self' 'sha256-" in docs.headers["content-security-policy"]


def test_docs_pages_run_only_their_own_scripts_and_load_nothing_from_outside(client: TestClient) -> None:
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        r = client.get(page)
        assert r.status_code == 200 and f'src="/static/docs/{asset}"' in r.text
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", r.text), page  # nothing from a CDN
        inline = re.findall(r"<script>(.*?)</script>", r.text, re.DOTALL)
        hashes = {f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline}
        csp = r.headers["content-security-policy"]
        assert set(re.findall(r"'sha256-[^']+'", csp)) == hashes and "'unsafe-inline'" not in csp.split(";")[1]
        js = client.get(f"/static/docs/{asset}")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"] and len(js.content) > 100_000
