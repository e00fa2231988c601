"""A tiny stand-in for the reference service on 127.0.0.1, for the checks' unit tests, and the
checks' configuration against it (CONFIG: deploy.toml text, BASE_URL to be replaced by the fake's
URL; ENVIRON: its test users' credentials)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.http_thread import serving


@dataclass
class FakeState:
    users: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    db_down: bool = False
    delay_s: float = 0.0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _error(status: int, code: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": code, "message": message, **extra}}


class Handler(BaseHTTPRequestHandler):
    state: FakeState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _user(self) -> tuple[str, list[str]] | None:
        header = self.headers.get("Authorization", "")
        name = header.removeprefix("Bearer tok-")
        if not header.startswith("Bearer tok-") or name not in self.state.users:
            return None
        return name, self.state.users[name][1]

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> tuple[int, Any]:
        state = self.state
        with state.lock:
            state.requests += 1
        if state.delay_s:
            time.sleep(state.delay_s)
        path = self.path
        if method == "GET" and path == "/health":
            if state.db_down:
                return 503, {
                    "status": "unavailable",
                    "version": "1",
                    "database": {"reachable": False, "alembic_revision": None},
                }
            return 200, {
                "status": "ok",
                "version": "1",
                "database": {"reachable": True, "round_trip_ms": 1.5, "alembic_revision": "0002"},
            }
        if method == "POST" and path == "/auth/login":
            body = self._body()
            if not isinstance(body, dict):
                return _error(400, "invalid_request", "bad body")
            known = state.users.get(str(body.get("username")))
            if known is None or known[0] != body.get("password"):
                return _error(401, "unauthorized", "invalid username or password")
            return 200, {
                "access_token": f"tok-{body['username']}",
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        user = self._user()
        if user is None:
            return _error(401, "unauthorized", "a valid bearer token is required")
        roles = user[1]
        if path == "/documents" and method == "GET":
            if not set(roles) & {"viewer", "editor", "admin"}:
                return _error(
                    403, "forbidden", "needs documents:read", required_permission="documents:read"
                )
            return 200, {"documents": []}
        if path == "/users":
            if "admin" not in roles:
                return _error(
                    403, "forbidden", "needs users:manage", required_permission="users:manage"
                )
            if method == "POST":
                body = self._body() or {}
                if body["username"] in state.users:
                    return _error(409, "conflict", "exists")
                state.users[body["username"]] = (body["password"], list(body.get("roles", [])))
                return 201, {
                    "id": len(state.users),
                    "username": body["username"],
                    "roles": body.get("roles", []),
                }
            return 200, {"users": [{"username": u} for u in state.users]}
        return _error(404, "not_found", "no such route")

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, 'req_total{status="200"} 5\n', "text/plain")
            return
        if self.path == "/plain-error":
            self._send(500, "oops", "text/plain")
            return
        self._send(*self._route("GET"))

    def do_POST(self) -> None:
        self._send(*self._route("POST"))

    def do_DELETE(self) -> None:
        self._send(*self._route("DELETE"))


@contextmanager
def fake_service(state: FakeState) -> Iterator[str]:
    with serving(type("BoundHandler", (Handler,), {"state": state})) as url:
        yield url


#: A deploy.toml against the fake service (BASE_URL replaced by its URL), for the checks' tests.
CONFIG = """
[project]
name = "svc"
image_repository = "example/svc"
compose_files = ["docker-compose.prod.yml"]
app_service = "app"
database_service = "db"
migration_command = ["true"]

[environments.local]
compose_project = "dtchk-unit"
base_url = "BASE_URL"

[thresholds]
# Far above what the fake service needs: these tests are about the checks' logic, and a loaded
# machine must not turn them into a latency measurement (the slow-probe test sets its own delay).
# With 100 samples the p95's 95% range reaches the slowest answers: one stall of a second made
# smoke inconclusive under a 1000 ms threshold.
api_p95_ms = 5000.0

[checks]
admin_user = "admin"
error_fields = ["error.code", "error.message"]

[checks.users.admin]
username_env = "T_ADMIN_USER"
password_env = "T_ADMIN_PASSWORD"

[checks.users.viewer]
username_env = "T_VIEWER_USER"
password_env = "T_VIEWER_PASSWORD"
role = "viewer"

[checks.database]
expected_revision = ""

[[checks.probes]]
name = "health"
path = "/health"
expect_json = { status = "ok", "database.reachable" = true }
budget = "health_ms"

[[checks.probes]]
name = "wrong password refused"
method = "POST"
path = "/auth/login"
body = { username = "${viewer.username}", password = "wrong" }
expect_status = 401
expect_json = { "error.code" = "unauthorized" }

[[checks.rbac]]
user = "viewer"
path = "/documents"
expect_status = 200

[[checks.rbac]]
user = "viewer"
path = "/users"
expect_status = 403

[[checks.latency]]
user = "viewer"
path = "/documents"
rate_per_s = 100.0
duration_s = 1.0
min_samples = 100
suites = ["smoke"]
"""

ENVIRON = {
    "T_ADMIN_USER": "root",
    "T_ADMIN_PASSWORD": "admin-password-123",
    "T_VIEWER_USER": "vera",
    "T_VIEWER_PASSWORD": "viewer-password-123",
}
