"""Webhooks: Standard Webhooks signatures, the host allowlist, private-address refusal, real delivery."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from jobstore.db import utcnow
from jobstore.models import JobRecord
from jobstore.repositories import jobs as repo
from jobstore.repositories import webhook_secrets
from jobstore.settings import Settings
from jobstore.webhooks.delivery import deliver
from jobstore.webhooks.policy import WebhookRefused, check_url, resolve_target
from jobstore.webhooks.secrets import signing_secrets
from jobstore.webhooks.signing import sign, verify
from service.core.state import AppState
from tests.service.conftest import WEBHOOK_SECRET, rotate_webhook_secret, submit


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # From the Standard Webhooks specification's test suite.
    sig = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert verify(
        WEBHOOK_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}', "v1,bogus " + sig
    )
    assert not verify(WEBHOOK_SECRET, "msg_other", 1614265330, b'{"test": 2432232314}', sig)


def _settings(hosts: list[str]) -> Settings:
    return Settings(webhook_secret=WEBHOOK_SECRET, webhook_allowed_hosts=hosts)  # type: ignore[arg-type]


def test_allowlist_rules() -> None:
    s = _settings(["hooks.example.com", "*.example.org"])
    assert check_url("https://hooks.example.com/x", s) == ("hooks.example.com", "exact")
    assert check_url("https://a.b.example.org/x", s)[1] == "pattern"
    for bad in ["https://example.org/x", "https://evil.com/x", "https://hooks.example.com.evil.com/"]:
        with pytest.raises(WebhookRefused):
            check_url(bad, s)
    with pytest.raises(WebhookRefused, match="not enabled"):
        check_url("https://hooks.example.com/x", Settings())


def test_pattern_hosts_must_not_resolve_to_private_addresses() -> None:
    # Matched only by a pattern, a host that resolves to loopback is refused (no DNS needed: an IP literal).
    with pytest.raises(WebhookRefused, match="non-public"):
        resolve_target("http://127.0.0.1/x", _settings(["*.0.1"]))
    # Listed exactly, a private address is the operator's explicit choice.
    assert resolve_target("http://127.0.0.1:9/x", _settings(["127.0.0.1"])) == ("127.0.0.1", "127.0.0.1")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com:99999/x", "port"),
        ("http://hooks.example.com:0/x", "port"),
        ("http://hooks.example.com:http/x", "port"),
        ("http://[::1/x", "malformed"),
        ("http://a..example.org/x", "not a valid host name"),
        ("http://a b.example.org/x", "not a valid host name"),
    ],
)
def test_malformed_urls_are_refused_not_raised(url: str, reason: str) -> None:
    s = _settings(["hooks.example.com", "*.example.org"])
    with pytest.raises(WebhookRefused, match=reason):
        check_url(url, s)
    with pytest.raises(WebhookRefused, match=reason):
        resolve_target(url, s)


def test_delivery_refuses_a_stored_url_with_a_bad_port(client: TestClient, state: AppState) -> None:
    # A job stored before submissions checked the port: its delivery is refused, not a crash of the task.
    job_id = submit(client, webhook_url="http://127.0.0.1/hook")["id"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    with state.db.session() as s:
        s.execute(update(JobRecord).where(JobRecord.id == job_id).values(webhook_url="http://127.0.0.1:99999/hook"))
    with state.db.session() as s:
        job = repo.get_job_any(s, job_id)
    result = deliver(state.settings, job, ["whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    assert not result.ok and not result.retryable and "port" in result.detail


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append({"headers": dict(self.headers), "body": body})
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    _Receiver.received = []
    _Receiver.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook?x=1", _Receiver
    finally:
        server.shutdown()


def _secrets_of(state: AppState, owner: str) -> list[str]:
    with state.db.session() as s:
        return signing_secrets(state.settings, webhook_secrets.get(s, owner), utcnow())


def test_delivery_is_signed_and_verifiable(client: TestClient, state: AppState, receiver) -> None:
    url, rec = receiver
    secret = rotate_webhook_secret(client)
    job_id = submit(client, webhook_url=url)["id"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    with state.db.session() as s:
        job = repo.get_job_any(s, job_id)
    result = deliver(state.settings, job, _secrets_of(state, "alice"))
    assert result.ok, result.detail
    (msg,) = rec.received
    h = {k.lower(): v for k, v in msg["headers"].items()}
    assert h["webhook-id"] == f"msg_{job_id}_canceled"
    assert verify(secret, h["webhook-id"], int(h["webhook-timestamp"]), msg["body"], h["webhook-signature"])
    payload = json.loads(msg["body"])
    assert payload["type"] == "job.canceled" and payload["data"]["id"] == job_id
    rec.status = 500
    again = deliver(state.settings, job, _secrets_of(state, "alice"))
    assert not again.ok and again.retryable


def test_cancel_of_a_queued_job_enqueues_its_webhook(client: TestClient, state: AppState, receiver) -> None:
    url, _ = receiver
    job_id = submit(client, webhook_url=url)["id"]
    before = state.broker.queue_depths()["cpu"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert state.broker.queue_depths()["cpu"] == before + 1
    with state.db.session() as s:
        assert repo.get_job_any(s, job_id).webhook_state == "pending"
