"""HTTP routes of /v1/webhook-secret: see the key's secret generation, rotate it (the secret is shown once)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from jobstore.db import utcnow
from jobstore.repositories import webhook_secrets
from jobstore.webhooks.secrets import current_secret
from prunekit.spec.api import WebhookDeliveryList, WebhookRedelivery
from service.core.deps import CurrentKey, OwnedJob, SessionDep, StateDep
from service.core.errors import NotImplementedProblem, problem_responses
from service.webhooks import service
from service.webhooks.schemas import WebhookSecretCreated, WebhookSecretInfo

router = APIRouter(prefix="/v1/webhook-secret", tags=["webhooks"], responses=problem_responses(401, 422))


@router.get("", response_model=WebhookSecretInfo)
def get_webhook_secret(key: CurrentKey, session: SessionDep, state: StateDep) -> WebhookSecretInfo:
    """The key's secret generation and rotation time (never the secret)."""
    return WebhookSecretInfo.of(webhook_secrets.get(session, key.name), state.settings)


@router.post("/rotate", status_code=201, response_model=WebhookSecretCreated, responses=problem_responses(501))
def rotate_webhook_secret(
    key: CurrentKey, session: SessionDep, state: StateDep, response: Response
) -> WebhookSecretCreated:
    """Create the key's webhook secret or replace it; the previous one still signs during the grace period."""
    if state.settings.webhook_secret is None:
        raise NotImplementedProblem("webhooks are disabled on this server (no PRUNEKIT_WEBHOOK_SECRET)")
    row = webhook_secrets.rotate(session, key.name, utcnow())
    response.headers["Cache-Control"] = "no-store"
    info = WebhookSecretInfo.of(row, state.settings)
    return WebhookSecretCreated(**info.model_dump(), secret=current_secret(state.settings, row))


deliveries_router = APIRouter(prefix="/v1/jobs", tags=["webhooks"], responses=problem_responses(401, 404, 422))


@deliveries_router.get("/{job_id}/webhook-deliveries", response_model=WebhookDeliveryList)
def list_webhook_deliveries(
    job: OwnedJob,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> WebhookDeliveryList:
    """The job's webhook delivery log: each attempt's time, event, message id, HTTP status or error, duration."""
    return service.list_deliveries(session, job, cursor, limit)


@deliveries_router.post(
    "/{job_id}/webhook-deliveries/redeliver",
    status_code=202,
    response_model=WebhookRedelivery,
    responses=problem_responses(409),
)
def redeliver_webhook(job: OwnedJob, session: SessionDep, state: StateDep) -> WebhookRedelivery:
    """Queue a signed delivery of the job's end again (same webhook-id: receivers dedupe on it)."""
    return service.redeliver(session, state.broker, job)
