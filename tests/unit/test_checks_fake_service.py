"""A tiny stand-in for the reference service on 127.0.0.1, for the checks' unit tests (no tests
of its own: a module the other test_checks_* modules import)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
