"""Database access: one engine per process, plain Core statements."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from notes_api import security, settings
from notes_api.tables import notes, users

log = logging.getLogger("notes_api")
_engine: sa.engine.Engine | None = None


def engine() -> sa.engine.Engine:
    global _engine
    if _engine is None:
        _engine = sa.create_engine(
            settings.database_url(),
            pool_pre_ping=True,
            pool_size=5,
            connect_args={"application_name": "notes-api", "connect_timeout": 5},
        )
    return _engine


def ensure_superuser(email: str, password: str) -> bool:
    """Create the first superuser once (several workers may try at once: ON CONFLICT)."""
    if not email or not password:
        return False
    with engine().begin() as conn:
        hashed = security.hash_password(password)
        conn.execute(
            insert(users)
            .values(email=email, hashed_password=hashed, is_superuser=True)
            .on_conflict_do_nothing(index_elements=["email"])
        )
    return True


def user_by_email(email: str) -> dict[str, Any] | None:
    with engine().connect() as conn:
        row = conn.execute(sa.select(users).where(users.c.email == email)).mappings().first()
    return dict(row) if row else None


def user_by_id(user_id: int) -> dict[str, Any] | None:
    with engine().connect() as conn:
        row = conn.execute(sa.select(users).where(users.c.id == user_id)).mappings().first()
    return dict(row) if row else None


def create_user(email: str, password: str) -> dict[str, Any] | None:
    """The new user, or None when the email is taken."""
    try:
        with engine().begin() as conn:
            statement = (
                users.insert()
                .values(email=email, hashed_password=security.hash_password(password))
                .returning(users.c.id, users.c.email, users.c.is_superuser)
            )
            row = conn.execute(statement).mappings().one()
    except IntegrityError:
        return None
    return dict(row)


def list_notes(owner_id: int) -> list[dict[str, Any]]:
    with engine().connect() as conn:
        rows = conn.execute(
            sa.select(notes.c.id, notes.c.title, notes.c.body)
            .where(notes.c.owner_id == owner_id)
            .order_by(notes.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def add_note(owner_id: int, title: str, body: str) -> dict[str, Any]:
    with engine().begin() as conn:
        statement = (
            notes.insert()
            .values(owner_id=owner_id, title=title, body=body)
            .returning(notes.c.id, notes.c.title, notes.c.body)
        )
        row = conn.execute(statement).mappings().one()
    return dict(row)
