"""Entry points: `uvicorn --factory service.main:app_factory` and `python -m service.main` (API only)."""

from __future__ import annotations

import logging
import os

import uvicorn
from fastapi import FastAPI

from jobstore.settings import Settings


def app_factory() -> FastAPI:
    """The app for the settings in the environment."""
    from service.app import create_app

    return create_app(Settings())


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
    uvicorn.run(
        "service.main:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level="info",
        workers=workers,
    )


if __name__ == "__main__":
    main()
