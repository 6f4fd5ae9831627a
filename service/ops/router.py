"""Liveness, readiness and metrics."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.core.deps import StateDep

router = APIRouter(tags=["ops"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process is up."""
    # async: no worker-thread hop, so it measures the event loop itself (and is the status benchmark's baseline)
    return {"status": "ok"}


_CHECKS_SCHEMA = {
    "type": "object",
    "properties": {name: {"type": "boolean"} for name in ("database", "broker", "storage")},
    "required": ["database", "broker", "storage"],
}


@router.get(
    "/readyz",
    responses={
        200: {"description": "Everything can be reached", "content": {"application/json": {"schema": _CHECKS_SCHEMA}}},
        503: {
            "description": "Something cannot be reached",
            "content": {"application/json": {"schema": _CHECKS_SCHEMA}},
        },
    },
)
async def readyz(state: StateDep) -> JSONResponse:
    """Database, broker and storage can be reached (200) or not (503)."""
    checks = {
        "database": await to_thread.run_sync(state.db.ping),
        "broker": await to_thread.run_sync(state.broker.ping),
        "storage": await to_thread.run_sync(state.storage.check),
    }
    return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(state: StateDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)
