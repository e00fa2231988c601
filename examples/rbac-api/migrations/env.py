"""Alembic environment for rbac-api.

Safety rails for production migrations:
- lock_timeout (ALEMBIC_LOCK_TIMEOUT, default 5s): a migration that waits on a lock held by live
  traffic fails fast instead of queueing every request behind it;
- statement_timeout (ALEMBIC_STATEMENT_TIMEOUT, default 60s): a runaway statement is cancelled;
- a PostgreSQL advisory lock with a fixed key, taken inside the migration transaction, so two
  migrators can never run at once: the second waits (up to ALEMBIC_MIGRATOR_WAIT, default 120s),
  then sees the first one's result and has nothing left to do.
"""

from __future__ import annotations

import logging.config
import os
import sys
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rbac_api.config import database_url
from rbac_api.models import metadata

# Fixed key for pg_advisory_xact_lock: "rbac-api migrations" (any constant bigint works).
MIGRATION_LOCK_KEY = 7_215_190_001

config = context.config
if config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

LOCK_TIMEOUT = os.environ.get("ALEMBIC_LOCK_TIMEOUT", "5s")
STATEMENT_TIMEOUT = os.environ.get("ALEMBIC_STATEMENT_TIMEOUT", "60s")
MIGRATOR_WAIT = os.environ.get("ALEMBIC_MIGRATOR_WAIT", "120s")


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: print the SQL instead of running it."""
    context.configure(
        url=database_url(),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        context.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        context.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(
        database_url(),
        poolclass=pool.NullPool,
        connect_args={"application_name": "rbac-api-migrate"},
    )
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            # Waiting for another migrator is a lock wait too: allow it longer than lock_timeout.
            connection.execute(text(f"SET LOCAL lock_timeout = '{MIGRATOR_WAIT}'"))
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
            connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            connection.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
