"""The jobs page with auth on: sign in with a key, a signed session cookie that opens only read-only pages."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from jobstore.settings import Settings
from service.app import create_app
from service.core.auth import KeyRing, Principal
from service.core.deps import SESSION_COOKIE
from service.core.errors import Unauthorized
from service.core.state import AppState
from tests.service.conftest import KEY_A, KEY_B, complete_job, submit


@pytest.fixture()
def browser(app: FastAPI) -> Iterator[TestClient]:
    """A client without an Authorization header, like a browser: only cookies."""
    with TestClient(app, follow_redirects=False) as c:
        yield c


def _sign_in(browser: TestClient, key: str = KEY_A) -> None:
    r = browser.post("/ui/login", data={"api_key": key})
    assert r.status_code == 303 and r.headers["location"] == "/ui", r.text
    cookie = r.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert KEY_A not in cookie and KEY_B not in cookie  # the key itself never goes into the cookie


def test_jobs_page_asks_a_browser_to_sign_in(browser: TestClient) -> None:
    r = browser.get("/ui")
    assert r.status_code == 401 and r.headers["content-type"].startswith("text/html")
    assert 'action="/ui/login"' in r.text and 'type="password"' in r.text


def test_wrong_key_gets_no_session(browser: TestClient) -> None:
    r = browser.post("/ui/login", data={"api_key": "not-a-key"})
    assert r.status_code == 401 and "unknown API key" in r.text
    assert "set-cookie" not in r.headers
    assert browser.get("/ui").status_code == 401


def test_signed_in_browser_sees_its_own_jobs_reports_and_artifacts(
    browser: TestClient, client: TestClient, bob: TestClient, state: AppState
) -> None:
    mine, theirs = submit(client), submit(bob)
    complete_job(state, mine["id"], b"my-artifact", {"status": "passed"})
    complete_job(state, theirs["id"], b"their-artifact", {"status": "passed"})
    _sign_in(browser)
    page = browser.get("/ui")
    assert page.status_code == 200 and mine["id"] in page.text and theirs["id"] not in page.text
    assert "signed in as <b>alice</b>" in page.text and 'action="/ui/logout"' in page.text
    assert browser.get(f"/v1/jobs/{mine['id']}/report.html").status_code == 200
    assert browser.get(f"/v1/jobs/{mine['id']}/report").json() == {"status": "passed"}
    assert browser.get(f"/v1/jobs/{mine['id']}/artifact").content == b"my-artifact"
    for path in ("report.html", "report", "artifact"):
        assert browser.get(f"/v1/jobs/{theirs['id']}/{path}").status_code == 404


def test_session_cookie_cannot_change_or_list_anything(browser: TestClient, client: TestClient) -> None:
    job = submit(client)
    _sign_in(browser)
    assert browser.post(f"/v1/jobs/{job['id']}/cancel").status_code == 401
    assert browser.delete(f"/v1/jobs/{job['id']}").status_code == 401
    assert browser.get("/v1/jobs").status_code == 401
    assert browser.post("/v1/files", files={"file": ("m.pt", b"x")}).status_code == 401
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"


def test_cross_origin_sign_in_is_refused(browser: TestClient) -> None:
    r = browser.post("/ui/login", data={"api_key": KEY_A}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert "set-cookie" not in r.headers
    same = browser.post("/ui/login", data={"api_key": KEY_A}, headers={"Origin": "http://testserver"})
    assert same.status_code == 303


def test_sign_out_forgets_the_session(browser: TestClient) -> None:
    _sign_in(browser)
    assert browser.get("/ui").status_code == 200
    r = browser.post("/ui/logout")
    assert r.status_code == 303 and f'{SESSION_COOKIE}=""' in r.headers["set-cookie"]
    assert browser.get("/ui").status_code == 401


def test_forged_and_stale_sessions_are_refused(browser: TestClient, state: AppState) -> None:
    good = state.keys.issue_session(Principal("alice"), ttl_seconds=600)
    version, name, expiry, sig = good.split(".")
    bob_name = state.keys.issue_session(Principal("bob"), ttl_seconds=600).split(".")[1]
    forged = {
        "other name, alice's signature": f"{version}.{bob_name}.{expiry}.{sig}",
        "longer expiry": f"{version}.{name}.{int(expiry) + 10**6}.{sig}",
        "garbage": "not-a-session",
        "expired": state.keys.issue_session(Principal("alice"), ttl_seconds=60, now=time.time() - 3600),
    }
    for what, token in forged.items():
        browser.cookies.set(SESSION_COOKIE, token)
        r = browser.get("/ui")
        assert r.status_code == 401, what
        assert "sign in again" in r.text, what
    browser.cookies.set(SESSION_COOKIE, good)
    assert browser.get("/ui").status_code == 200


def test_removing_a_key_ends_its_sessions(settings: Settings) -> None:
    token = KeyRing.from_settings(settings).issue_session(Principal("alice"), ttl_seconds=600)
    rotated = settings.model_copy(update={"api_keys": SecretStr(f"alice:new-{KEY_A},bob:{KEY_B}")})
    with pytest.raises(Unauthorized):
        KeyRing.from_settings(rotated).authenticate_session(token)
    with TestClient(create_app(rotated)) as c:
        c.cookies.set(SESSION_COOKIE, token)
        assert c.get("/ui").status_code == 401
