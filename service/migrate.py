"""`python -m service.migrate`: apply database migrations and exit (the compose migrations step)."""

from __future__ import annotations

import logging

from jobstore.db import run_migrations
from jobstore.settings import Settings

if __name__ == "__main__":
    logging.basicConfig(level="INFO")
    run_migrations(Settings().database_url)
    logging.getLogger("prunekit").info("migrations applied")
