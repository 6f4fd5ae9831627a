"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.auth import KeyRing
from service.core.broker import Broker
from service.core.config import Settings
from service.core.db import Database, run_migrations
from service.core.errors import install_problem_handlers
from service.core.state import AppState
from service.files.router import router as files_router
from service.jobs.router import router as jobs_router
from service.ops.metrics import JobStoreCollector, build_registry
from service.ops.router import router as ops_router
from service.storage import make_storage
from service.ui.router import router as ui_router

log = logging.getLogger(__name__)


class RequestMetrics:
    """Counts requests by route template (not raw path, which would explode label cardinality)."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.counter.labels(scope["method"], path, str(status["code"])).inc()


def create_app(settings: Settings) -> FastAPI:
    """Build the API for these settings; nothing is shared between two apps."""
    keys = KeyRing.from_settings(settings)
    registry, requests = build_registry()
    state = AppState(
        settings=settings,
        db=Database(settings.database_url),
        storage=make_storage(settings),
        keys=keys,
        broker=Broker(settings),
        registry=registry,
    )
    registry.register(JobStoreCollector(state))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await to_thread.run_sync(run_migrations, settings.database_url)
        yield
        state.broker.close()
        state.db.dispose()

    app = FastAPI(
        title="prunekit",
        version="1",
        summary="Prune PyTorch models: submit a job, poll it, download the artifact and its report.",
        lifespan=lifespan,
    )
    app.state.prunekit = state
    install_problem_handlers(app)
    app.include_router(files_router)
    app.include_router(jobs_router)
    app.include_router(ops_router)
    app.include_router(ui_router)
    app.add_middleware(RequestMetrics, counter=requests)
    return app
