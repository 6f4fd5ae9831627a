"""Alembic environment: runs on the connection handed over by jobstore.db.run_migrations."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import jobstore.models  # noqa: F401  (registers the tables on Base.metadata)
from jobstore.db import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies tables instead
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or pass a connection")
    engine = create_engine(url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
