"""The minimal deploy.toml the unit tests start from, as text: the `[project]` table and a
staging environment on the local engine. A module adds its own environments and tables after
it (text, not a parsed Config, so that a test can also break it with `str.replace`)."""

from __future__ import annotations

#: The `[project]` table of every unit test's deploy.toml.
PROJECT = """
[project]
name = "svc"
image_repository = "ghcr.io/acme/svc"
compose_files = ["docker-compose.prod.yml"]
app_service = "app"
database_service = "db"
migration_command = ["alembic", "upgrade", "head"]
"""

#: A Compose environment on the local engine.
STAGING = """
[environments.staging]
compose_project = "svc-staging"
base_url = "http://127.0.0.1:8081"
"""

#: The smallest deploy.toml that loads: PROJECT and STAGING.
MINIMAL = PROJECT + STAGING
