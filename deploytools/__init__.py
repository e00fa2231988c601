"""deploytools: the release runbook of a Compose + PostgreSQL + Alembic service, as software."""

from __future__ import annotations

__version__ = "0.1.0"
