"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from prometheus_client import Counter
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobstore.broker import Broker
from jobstore.db import Database, run_migrations
from jobstore.job_changes import LoopStatusCaches
from jobstore.settings import Settings
from jobstore.storage import make_storage
from jobstore.storage.cleanup import clean_upload_parts, remove_stale_uploads
from prunekit.spec.api import Problem
from prunekit.spec.job import JobSpec
from service.core.auth import KeyRing
from service.core.deps import SESSION_COOKIE
from service.core.errors import COMMON_PROBLEMS, install_problem_handlers
from service.core.security_headers import SecurityHeaders
from service.core.state import AppState
from service.files.router import router as files_router
from service.jobs.router import router as jobs_router
from service.ops.metrics import JobStoreCollector, build_registry
from service.ops.router import router as ops_router
from service.ui.docs import install_docs
from service.ui.router import router as ui_router
from service.uploads.router import router as uploads_router
from service.webhooks.router import deliveries_router as webhook_deliveries_router
from service.webhooks.router import router as webhooks_router

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


# Models the routes' hand-written docs refer to as #/components/schemas/<name> (FastAPI only adds the ones it sees).
_DOC_MODELS: tuple[type[BaseModel], ...] = (Problem, JobSpec)
BEARER_SCHEME = "apiKey"
SESSION_SCHEME = "session"


def _document_auth(operation: dict[str, Any]) -> None:
    """Turn the Authorization header (and the jobs page's cookie) an operation reads into its security."""
    params = operation.get("parameters", [])
    takes_key = any(p["in"] == "header" and p["name"].lower() == "authorization" for p in params)
    takes_cookie = any(p["in"] == "cookie" and p["name"] == SESSION_COOKIE for p in params)
    if not takes_key:
        return
    # OpenAPI ignores an `Authorization` header parameter; the session cookie is documented as a scheme instead.
    kept = [
        p
        for p in params
        if not (p["in"] == "header" and p["name"].lower() == "authorization")
        and not (p["in"] == "cookie" and p["name"] == SESSION_COOKIE)
    ]
    if kept:
        operation["parameters"] = kept
    else:
        operation.pop("parameters", None)
    operation["security"] = [{BEARER_SCHEME: []}] + ([{SESSION_SCHEME: []}] if takes_cookie else [])


def _hoist_defs(node: Any, schemas: dict[str, Any]) -> None:
    """Move `$defs` that hand-written docs embed (model_json_schema()) into components: ReDoc cannot resolve them."""
    if isinstance(node, list):
        for item in node:
            _hoist_defs(item, schemas)
    if not isinstance(node, dict):
        return
    for name, sub in node.pop("$defs", {}).items():
        _hoist_defs(sub, schemas)
        if schemas.setdefault(name, sub) != sub:
            raise RuntimeError(f"two different schemas are named {name} in the OpenAPI document")
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
    for value in node.values():
        _hoist_defs(value, schemas)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document: FastAPI's, plus the API key scheme and the schemas the hand-written docs use."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = FastAPI.openapi(app)
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in _DOC_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in {**schema.pop("$defs", {}), model.__name__: schema}.items():
            if schemas.setdefault(name, sub) != sub:
                raise RuntimeError(f"two different schemas are named {name} in the OpenAPI document")
    doc["components"]["securitySchemes"] = {
        BEARER_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from PRUNEKIT_API_KEYS: `Authorization: Bearer <key>`.",
        },
        SESSION_SCHEME: {
            "type": "apiKey",
            "in": "cookie",
            "name": SESSION_COOKIE,
            "description": "The signed session the jobs page (/ui) sets after signing in; read-only pages only.",
        },
    }
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            _document_auth(operation)
    _hoist_defs(doc.get("paths", {}), schemas)
    app.openapi_schema = doc
    return doc


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
        status_caches=LoopStatusCaches(settings.database_url, settings.status_cache_ttl, settings.status_cache),
    )
    registry.register(JobStoreCollector(state))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await to_thread.run_sync(run_migrations, settings.database_url)
        await to_thread.run_sync(clean_upload_parts, settings)
        await to_thread.run_sync(remove_stale_uploads, state.db, state.storage, settings.upload_part_stale_after)
        state.db.async_engines.open()  # GET /v1/jobs/{id} reads on the loop (PostgreSQL only)
        state.status_caches.start()  # ... and from a cache that job change notifications keep fresh
        yield
        await state.status_caches.stop()
        await state.db.async_engines.close()
        state.broker.close()
        state.db.dispose()

    app = FastAPI(
        title="prunekit",
        version="1",
        summary="Prune PyTorch models: submit a job, poll it, download the artifact and its report.",
        lifespan=lifespan,
        responses=COMMON_PROBLEMS,
        docs_url=None,  # FastAPI's own pages load their scripts from a CDN; install_docs serves them offline
        redoc_url=None,
    )
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    app.state.prunekit = state
    install_problem_handlers(app)
    app.include_router(files_router)
    app.include_router(uploads_router)
    app.include_router(jobs_router)
    app.include_router(ops_router)
    app.include_router(ui_router)
    app.include_router(webhooks_router)
    app.include_router(webhook_deliveries_router)
    install_docs(app)
    app.add_middleware(RequestMetrics, counter=requests)
    app.add_middleware(SecurityHeaders)
    return app
