"""Liveness, readiness and metrics."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.core.deps import StateDep

router = APIRouter(tags=["ops"])


@router.get("/livez")
def livez() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    """Database, broker and storage can be reached (200) or not (503)."""
    checks = {
        "database": await to_thread.run_sync(state.db.ping),
        "broker": await to_thread.run_sync(state.broker.ping),
        "storage": await to_thread.run_sync(state.storage.check),
    }
    return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)


@router.get("/metrics")
def metrics(state: StateDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)
