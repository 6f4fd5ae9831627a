"""Each API key signs its webhooks with its own secret: one tenant cannot forge another's (real DB, real HTTP)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from jobstore.db import utcnow
from jobstore.models import WebhookSecretRecord
from jobstore.repositories import jobs as repo
from jobstore.repositories import webhook_secrets
from jobstore.settings import Settings
from jobstore.webhooks.delivery import deliver
from jobstore.webhooks.secrets import signing_secrets
from jobstore.webhooks.signing import sign, verify
from service.app import create_app
from service.core.state import AppState
from tests.service.conftest import KEY_A, WEBHOOK_SECRET, rotate_webhook_secret, submit
from tests.service.test_webhooks import _Receiver, receiver  # noqa: F401  (the receiver fixture)


def _deliver_canceled(client: TestClient, state: AppState, url: str) -> str:
    job_id: str = submit(client, webhook_url=url)["id"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    with state.db.session() as s:
        job = repo.get_job_any(s, job_id)
        secrets = signing_secrets(state.settings, webhook_secrets.get(s, job.owner), utcnow())
    assert deliver(state.settings, job, secrets).ok
    return job_id


def _headers(rec: type[_Receiver]) -> tuple[dict[str, str], bytes]:
    msg = rec.received[-1]
    return {k.lower(): v for k, v in msg["headers"].items()}, msg["body"]


def test_a_key_without_a_secret_cannot_ask_for_webhooks(client: TestClient) -> None:
    assert client.get("/v1/webhook-secret").json()["generation"] is None
    model = client.post("/v1/files", files={"file": ("m.pt", b"x")}).json()
    r = client.post(
        "/v1/jobs",
        json={
            "spec": {"pruning": {"sparsity": 0.5}},
            "model_file_id": model["id"],
            "webhook_url": "https://hooks.example.com/x",
        },
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "webhook_url"
    assert "POST /v1/webhook-secret" in r.json()["detail"]


def test_the_secret_is_shown_once_and_never_stored(client: TestClient, state: AppState) -> None:
    r = client.post("/v1/webhook-secret/rotate")
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["secret"].startswith("whsec_") and len(base64.b64decode(body["secret"][6:])) == 32
    assert body["generation"] == 1 and body["previous_valid_until"] is None
    info = client.get("/v1/webhook-secret").json()
    assert info["generation"] == 1 and "secret" not in info
    with state.db.session() as s:  # only the generation is in the database
        row = webhook_secrets.get(s, "alice")
        assert row is not None and body["secret"] not in repr(vars(row))


def test_tenant_b_cannot_verify_tenant_a_and_the_reference_library_verifies_a(
    client: TestClient,
    bob: TestClient,
    state: AppState,
    receiver: tuple[str, type[_Receiver]],  # noqa: F811
) -> None:
    url, rec = receiver
    alice, bob_secret = rotate_webhook_secret(client), rotate_webhook_secret(bob)
    assert alice != bob_secret
    _deliver_canceled(client, state, url)
    h, body = _headers(rec)
    ts = int(h["webhook-timestamp"])
    assert verify(alice, h["webhook-id"], ts, body, h["webhook-signature"], now=int(time.time()))
    for other in (bob_secret, WEBHOOK_SECRET):  # nor does the server's master secret sign anything
        assert not verify(other, h["webhook-id"], ts, body, h["webhook-signature"])
    Webhook(alice).verify(body, h)  # the Standard Webhooks reference implementation agrees
    with pytest.raises(WebhookVerificationError):
        Webhook(bob_secret).verify(body, h)


def test_verification_enforces_the_timestamp_tolerance() -> None:
    secret, now = "whsec_" + base64.b64encode(b"k" * 32).decode(), int(time.time())
    sig = sign(secret, "msg_1", now - 301, b"{}")
    assert verify(secret, "msg_1", now - 301, b"{}", sig)  # no clock given: the signature alone
    assert not verify(secret, "msg_1", now - 301, b"{}", sig, now=now, tolerance=300)
    assert verify(secret, "msg_1", now - 299, b"{}", sign(secret, "msg_1", now - 299, b"{}"), now=now)


def test_after_a_rotation_both_secrets_sign_until_the_grace_period_ends(
    client: TestClient,
    state: AppState,
    receiver: tuple[str, type[_Receiver]],  # noqa: F811
) -> None:
    url, rec = receiver
    old = rotate_webhook_secret(client)
    new = rotate_webhook_secret(client)
    assert client.get("/v1/webhook-secret").json()["generation"] == 2
    _deliver_canceled(client, state, url)
    h, body = _headers(rec)
    Webhook(old).verify(body, h)
    Webhook(new).verify(body, h)
    with state.db.session() as s:  # the grace period is over
        long_ago = utcnow() - timedelta(seconds=state.settings.webhook_rotation_grace + 1)
        s.execute(update(WebhookSecretRecord).where(WebhookSecretRecord.owner == "alice").values(rotated_at=long_ago))
    _deliver_canceled(client, state, url)
    h, body = _headers(rec)
    Webhook(new).verify(body, h)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, h)


@pytest.fixture()
def no_webhooks_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"webhook_secret": None}))
    with TestClient(app, headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        yield c


def test_rotation_is_refused_when_the_server_has_no_master_secret(no_webhooks_client: TestClient) -> None:
    r = no_webhooks_client.post("/v1/webhook-secret/rotate")
    assert r.status_code == 501 and r.headers["content-type"].startswith("application/problem+json")
