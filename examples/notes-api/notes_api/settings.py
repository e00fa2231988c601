"""Settings from the environment, read once at start-up.

The database is reached through libpq's own variables (PGHOST, PGPORT, PGUSER, PGPASSWORD,
PGDATABASE), or DATABASE_URL when set: no URL is assembled here, so a password needs no quoting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MIN_SECRET_LENGTH = 16


class SettingsError(RuntimeError):
    """The environment does not describe a runnable service."""


def database_url() -> str:
    return os.environ.get("DATABASE_URL", "").strip() or "postgresql+psycopg2://"


def version() -> str:
    """NOTES_VERSION (baked into the image), else the VERSION file beside the package."""
    baked = os.environ.get("NOTES_VERSION", "").strip()
    if baked:
        return baked
    try:
        return (Path(__file__).resolve().parent.parent / "VERSION").read_text().strip()
    except OSError:
        return "unknown"


@dataclass(frozen=True)
class Settings:
    secret_key: str
    first_superuser: str
    first_superuser_password: str
    token_ttl_s: int


def load() -> Settings:
    secret = os.environ.get("SECRET_KEY", "")
    if len(secret) < MIN_SECRET_LENGTH:
        raise SettingsError(f"SECRET_KEY must be set, {MIN_SECRET_LENGTH}+ characters")
    return Settings(
        secret_key=secret,
        first_superuser=os.environ.get("FIRST_SUPERUSER", "").strip().lower(),
        first_superuser_password=os.environ.get("FIRST_SUPERUSER_PASSWORD", ""),
        token_ttl_s=int(os.environ.get("ACCESS_TOKEN_TTL_S", "3600")),
    )
