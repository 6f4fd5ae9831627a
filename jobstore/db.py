"""Database engine, sessions and migrations (SQLAlchemy 2, Alembic)."""

from __future__ import annotations

import asyncio
import logging
import select
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event, text
from sqlalchemy import Enum as SQLEnum
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, InvalidRequestError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same in every process that migrates.
_PG_MIGRATION_LOCK = 7_314_159


def utcnow() -> datetime:
    return datetime.now(UTC)


def affected_rows(session: Session, stmt: Any) -> int:
    """Run a conditional UPDATE/DELETE and return how many rows it changed (0 means the condition lost a race)."""
    result = session.execute(stmt.execution_options(synchronize_session=False))
    assert isinstance(result, CursorResult)  # UPDATE/DELETE always give one
    return int(result.rowcount)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (SQLite has no time zones) and always returns aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def enum_column(enum_cls: type[StrEnum], length: int = 16) -> SQLEnum:
    """A StrEnum stored as its value in a plain VARCHAR (no native enum, no CHECK: the migrations stay as they are)."""
    return SQLEnum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    pass


def make_engine(url: str) -> Engine:
    """An engine tuned per backend: WAL and a busy timeout for SQLite (API and worker share the file)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            # Python's sqlite3 opens transactions lazily; BEGIN IMMEDIATE is not needed because
            # every state change is a single conditional UPDATE.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20)
    event.listen(engine, "checkout", _refuse_closed_by_server)
    return engine


def _refuse_closed_by_server(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """Instead of pool_pre_ping's round trip on every checkout: an idle connection the server ended is readable.

    PostgreSQL writes a FATAL message and closes the socket when it terminates a backend (restart,
    pg_terminate_backend). Anything else unasked (a NOTIFY, a reloaded setting) only costs a reconnect. Raising
    DisconnectionError makes the pool discard it and check out (or open) another.
    """
    dbapi_conn = getattr(dbapi_conn, "driver_connection", dbapi_conn)  # the psycopg connection under an async adapter
    fileno = getattr(dbapi_conn, "fileno", None)
    if getattr(dbapi_conn, "closed", False):
        raise DisconnectionError("the database connection is closed")
    if fileno is None:
        return
    poller = select.poll()
    poller.register(fileno(), select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the database server closed this connection")


# What the pool raises once every connection it tried on checkout was found closed by the server (see above).
_CHECKOUT_EXHAUSTED = "This connection is closed"


def is_transient(exc: BaseException) -> bool:
    """A database error that a new connection may not have: a dropped link, a restart, a failover."""
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    # While the server keeps ending connections, checkout can find each one it tries closed; SQLAlchemy then
    # gives up with this bare InvalidRequestError (its subclasses mean misuse, not a lost server).
    return type(exc) is InvalidRequestError and str(exc).startswith(_CHECKOUT_EXHAUSTED)


class LoopEngines:
    """Autocommit AsyncEngines for PostgreSQL reads, one per event loop that opened one.

    An asyncio connection belongs to the loop that opened it; tests run one app in several loops (TestClients).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEngine] = weakref.WeakKeyDictionary()

    def open(self) -> None:
        """Create this loop's engine (connections open on first use); a no-op for SQLite."""
        loop = asyncio.get_running_loop()
        if self.url.startswith("postgresql") and loop not in self._engines:
            # Only hot polls use it, so a small pool; the sync engine keeps serving everything else.
            engine = create_async_engine(self.url, pool_size=8, max_overflow=0, isolation_level="AUTOCOMMIT")
            event.listen(engine.sync_engine, "checkout", _refuse_closed_by_server)
            self._engines[loop] = engine

    def get(self) -> AsyncEngine | None:
        """This loop's engine, or None (SQLite, or a loop that did not open one): use the sync engine then."""
        return self._engines.get(asyncio.get_running_loop())

    async def close(self) -> None:
        engine = self._engines.pop(asyncio.get_running_loop(), None)
        if engine is not None:
            await engine.dispose()


class Database:
    """An engine plus its session factory; one per process (create it after a fork)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.async_engines = LoopEngines(url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self.sessionmaker() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # readiness probe: any failure means "not ready"
            log.warning("database not reachable", exc_info=True)
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def run_migrations(url: str) -> None:
    """Apply Alembic migrations up to head; concurrent starters on PostgreSQL serialize on a lock."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
            finally:
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                    conn.commit()
    finally:
        engine.dispose()
