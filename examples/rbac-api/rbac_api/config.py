"""Settings read from the environment, once, at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

MIN_SECRET_KEY_LENGTH = 16


class ConfigError(RuntimeError):
    """The environment does not describe a runnable service."""


def app_version() -> str:
    """The release version: APP_VERSION (baked into the image), else the VERSION file."""
    version = os.environ.get("APP_VERSION", "").strip()
    if version:
        return version
    version_file = Path(__file__).resolve().parent.parent / "VERSION"
    try:
        return version_file.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def database_url() -> URL:
    """DATABASE_URL if set, else a URL built from Compose-friendly parts.

    The parts (DATABASE_HOST, DATABASE_PORT, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB) let a
    Compose file pass the same variables to the database and the app, with no URL-encoding of
    the password.
    """
    raw = os.environ.get("DATABASE_URL", "").strip()
    if raw:
        return make_url(raw)
    password = os.environ.get("POSTGRES_PASSWORD")
    if not password:
        raise ConfigError(
            "set DATABASE_URL, or DATABASE_HOST and POSTGRES_PASSWORD (and optionally "
            "DATABASE_PORT, POSTGRES_USER, POSTGRES_DB)"
        )
    return URL.create(
        "postgresql+psycopg2",
        username=os.environ.get("POSTGRES_USER", "postgres"),
        password=password,
        host=os.environ.get("DATABASE_HOST", "db"),
        port=int(os.environ.get("DATABASE_PORT", "5432")),
        database=os.environ.get("POSTGRES_DB") or os.environ.get("POSTGRES_USER", "postgres"),
    )


@dataclass(frozen=True)
class Settings:
    version: str
    database_url: URL
    secret_key: bytes
    token_ttl_seconds: int
    slow_ms: int
    db_connect_timeout_s: int

    @classmethod
    def from_env(cls) -> Settings:
        secret = os.environ.get("APP_SECRET_KEY", "")
        if len(secret) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(
                f"APP_SECRET_KEY must be set to at least {MIN_SECRET_KEY_LENGTH} "
                "characters (there is no default)"
            )
        return cls(
            version=app_version(),
            database_url=database_url(),
            secret_key=secret.encode("utf-8"),
            token_ttl_seconds=int(os.environ.get("TOKEN_TTL_SECONDS", "3600")),
            # Off by default; later latency tests set it to slow /documents down on purpose.
            slow_ms=int(os.environ.get("RBAC_API_SLOW_MS", "0") or "0"),
            db_connect_timeout_s=int(os.environ.get("DATABASE_CONNECT_TIMEOUT", "2")),
        )
