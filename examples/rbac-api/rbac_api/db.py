"""The database engine, with every statement timed into a histogram."""

from __future__ import annotations

import time

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine

from . import metrics


def make_engine(url: URL, *, connect_timeout_s: int = 2) -> Engine:
    engine = create_engine(
        url,
        future=True,
        pool_size=8,  # one connection per gunicorn thread
        max_overflow=4,
        pool_pre_ping=True,
        pool_recycle=1800,
        # A short connect timeout keeps /health fast (and honest) when the database is down.
        connect_args={"connect_timeout": connect_timeout_s, "application_name": "rbac-api"},
    )

    @event.listens_for(engine, "before_cursor_execute")
    def _start_timer(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("query_start", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _observe(conn, cursor, statement, parameters, context, executemany):
        started = conn.info["query_start"].pop()
        metrics.DB_QUERY_LATENCY.observe(time.perf_counter() - started)

    return engine


def alembic_revision(conn: Connection) -> str | None:
    """The revision recorded in alembic_version; None if the database was never migrated."""
    exists = conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar()
    if not exists:
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
