"""Alembic environment of notes-api.

lock_timeout and statement_timeout come from ALEMBIC_LOCK_TIMEOUT / ALEMBIC_STATEMENT_TIMEOUT
(defaults 5s / 60s), in offline (`--sql`) mode too; an advisory lock keeps two migrators apart.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool, text

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from notes_api.settings import database_url
from notes_api.tables import metadata

MIGRATION_LOCK_KEY = 4_130_200_017
LOCK_TIMEOUT = os.environ.get("ALEMBIC_LOCK_TIMEOUT", "5s")
STATEMENT_TIMEOUT = os.environ.get("ALEMBIC_STATEMENT_TIMEOUT", "60s")


def offline() -> None:
    context.configure(url=database_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        context.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        context.run_migrations()


def online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            connection.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))
            context.run_migrations()


if context.is_offline_mode():
    offline()
else:
    online()
