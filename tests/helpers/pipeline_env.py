"""The end-to-end tier's two environments: the deploy.toml naming staging and production (short
checks: the point is the pipeline, not the check engine), production's seed data, and free ports
for their proxies. The pipeline benchmark uses them too, so it runs what the tier tests."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.prod.yml"
MAKE_RELEASE_REPO = REPO_ROOT / "examples" / "rbac-api" / "make-release-repo"
#: This run's stacks and store (`dte2e<PID>-staging`, ...): two runs on one engine never meet,
#: and a run's leftovers are known by a pid whose process is gone.
RUN_PREFIX = "dte2e"
PREFIX = f"{RUN_PREFIX}{os.getpid()}-"
STORE_VOLUME = f"{PREFIX}backups"
IMAGE_REPOSITORY = "dte2e/rbac-api"
LONG_TITLE = "Access review of the payments platform " + "x" * 150  # 189 of varchar(200)
UNICODE_TITLE = "Übersicht der Zugriffsrechte"


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999). A recreate deploy releases the
    app's port for seconds; a port from bind(0), which other suites on this engine use, could
    be handed to one of them meanwhile."""
    for _ in range(500):
        port = random.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def _toml(values: dict[str, str]) -> str:
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in sorted(values.items())) + " }"


def write_config(path: Path, staging: Any, production: Any) -> None:
    lines = [
        "[project]",
        'name = "rbac-api"',
        f'image_repository = "{IMAGE_REPOSITORY}"',
        f'compose_files = ["{COMPOSE_FILE}"]',
        'app_service = "app"',
        'database_service = "db"',
        'migration_command = ["alembic", "-c", "/app/alembic.ini", "upgrade", "head"]',
        "",
    ]
    for name, stack in (("staging", staging), ("production", production)):
        plain = {
            k: v
            for k, v in stack.env.items()
            if k not in ("APP_IMAGE", "APP_VERSION", "POSTGRES_PASSWORD", "APP_SECRET_KEY")
        }
        lines += [
            f"[environments.{name}]",
            f'compose_project = "{stack.project}"',
            f'base_url = "{stack.url}"',
            f"requires_approval = {'true' if name == 'production' else 'false'}",
            f"variables = {_toml(plain)}",
            'secrets = ["POSTGRES_PASSWORD", "APP_SECRET_KEY"]',
            "",
        ]
    lines += [
        "[backups]",
        f'store = "volume:{STORE_VOLUME}"',
        "retention = 5",
        "",
        "[deploy]",
        "health_timeout_s = 60.0",
        "lock_ttl_s = 600",
        "",
        *check_sections(),
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def check_sections() -> list[str]:
    """deploy.toml's [thresholds] and [checks] of the tier: short checks, generous budgets.
    The viewer's and the admin's credentials come from the environment (ADMIN_USERNAME, ...,
    CHECK_VIEWER_PASSWORD)."""
    return [
        # Generous: the machine is shared; latency is the benchmarks' business, not this test's.
        "[thresholds]",
        "health_ms = 2000.0",
        "api_p95_ms = 2000.0",
        "database_latency_ms = 2000.0",
        "",
        "[checks]",
        "timeout_s = 5.0",
        'admin_user = "admin"',
        "",
        "[checks.users.admin]",
        'username_env = "ADMIN_USERNAME"',
        'password_env = "ADMIN_PASSWORD"',
        "",
        "[checks.users.viewer]",
        'username_env = "CHECK_VIEWER_USERNAME"',
        'password_env = "CHECK_VIEWER_PASSWORD"',
        'role = "viewer"',
        "",
        "[checks.database]",
        'expected_revision = "head"',
        'suites = ["smoke", "validate", "verify"]',
        'revision_suites = ["validate", "verify"]',
        "",
        "[[checks.probes]]",
        'name = "health"',
        'path = "/health"',
        'expect_json = { status = "ok" }',
        'budget = "health_ms"',
        "",
        "[[checks.probes]]",
        'name = "login works"',
        'method = "POST"',
        'path = "/auth/login"',
        'body = { username = "${viewer.username}", password = "${viewer.password}" }',
        'expect_fields = ["access_token"]',
        "",
        "[[checks.probes]]",
        'name = "documents listed"',
        'user = "viewer"',
        'path = "/documents"',
        'expect_fields = ["documents"]',
        "",
        "[[checks.rbac]]",
        'user = "viewer"',
        'method = "POST"',
        'path = "/documents"',
        'body = { title = "must not be written" }',
        "expect_status = 403",
        "",
        "[[checks.latency]]",
        'name = "api p95 (short)"',
        'user = "viewer"',
        'path = "/documents"',
        "rate_per_s = 40.0",
        "duration_s = 2.5",
        "min_samples = 80",
        'suites = ["validate", "verify"]',
        "",
        "[checks.logs]",
        'patterns = [\'"level": "ERROR"\', "Traceback (most recent call last)"]',
        'suites = ["validate", "verify"]',
        "",
    ]


def seed_production(url: str, shared: dict[str, str]) -> None:
    """Users with roles and documents, two of them the kind of data only production has."""
    login = requests.post(
        f"{url}/auth/login",
        json={"username": shared["ADMIN_USERNAME"], "password": shared["ADMIN_PASSWORD"]},
        timeout=10,
    )
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    for name, role in (("alice", "editor"), ("bob", "viewer"), ("carol", "admin")):
        created = requests.post(
            f"{url}/users",
            json={"username": name, "password": shared["ADMIN_PASSWORD"], "roles": [role]},
            headers=auth,
            timeout=10,
        )
        assert created.status_code == 201, created.text
    titles = [f"Quarterly review {i}" for i in range(1, 11)] + [LONG_TITLE, UNICODE_TITLE]
    for title in titles:
        created = requests.post(
            f"{url}/documents", json={"title": title, "body": "seed"}, headers=auth, timeout=10
        )
        assert created.status_code == 201, created.text
