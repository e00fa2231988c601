"""A stand-in, on 127.0.0.1, for a service shaped like examples/notes-api (FastAPI's full-stack
template): health `GET /healthz` answering the bare JSON `true`, an OAuth2 password-grant login
(form-encoded) at `POST /auth/token`, superuser-only `POST /users` with {"email", "password"},
bearer-protected `GET/POST /notes`, errors as {"detail": "..."}, no roles, no /metrics.

It exists so that the checks' configuration for such a service (docs/checks.md) is run against
real HTTP in the unit tier. Every request's content type and form fields are recorded.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.http_thread import serving


@dataclass
class NotesState:
    #: email -> (password, is_superuser)
    users: dict[str, tuple[str, bool]] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)
    #: (method, path, content type) of every request, in order.
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class NotesHandler(BaseHTTPRequestHandler):
    state: NotesState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _raw(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self, raw: bytes) -> Any:
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _user(self) -> tuple[str, bool] | None:
        header = self.headers.get("Authorization", "")
        email = header.removeprefix("Bearer tok-")
        if not header.startswith("Bearer tok-") or email not in self.state.users:
            return None
        return email, self.state.users[email][1]

    def _route(self, method: str) -> tuple[int, Any]:
        state = self.state
        raw = self._raw()
        with state.lock:
            state.seen.append((method, self.path, self.headers.get("Content-Type", "")))
        if method == "GET" and self.path == "/healthz":
            return 200, True
        if method == "POST" and self.path == "/auth/token":
            if not self.headers.get("Content-Type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                return 422, {"detail": "form fields required"}
            form = dict(urllib.parse.parse_qsl(raw.decode()))
            if form.get("grant_type") != "password":
                return 422, {"detail": "grant_type must be password"}
            known = state.users.get(form.get("username", ""))
            if known is None or known[0] != form.get("password"):
                return 400, {"detail": "Incorrect email or password"}
            return 200, {"access_token": f"tok-{form['username']}", "token_type": "bearer"}
        user = self._user()
        if user is None:
            return 401, {"detail": "Not authenticated"}
        email, superuser = user
        if self.path == "/users" and method == "POST":
            if not superuser:
                return 403, {"detail": "The user doesn't have enough privileges"}
            body = self._json(raw) or {}
            if body.get("email") in state.users:
                return 400, {"detail": "The user with this email already exists"}
            state.users[body["email"]] = (body["password"], False)
            return 201, {"id": len(state.users), "email": body["email"]}
        if self.path == "/notes" and method == "GET":
            mine = [n for n in state.notes if n["owner"] == email]
            return 200, {"data": mine, "count": len(mine)}
        if self.path == "/notes" and method == "POST":
            body = self._json(raw) or {}
            if not {"title", "body"} <= set(body):
                return 422, {"detail": "title and body required"}
            note = {"id": len(state.notes) + 1, "owner": email, **body}
            state.notes.append(note)
            return 201, note
        return 404, {"detail": "Not Found"}

    def do_GET(self) -> None:
        self._send(*self._route("GET"))

    def do_POST(self) -> None:
        self._send(*self._route("POST"))


@contextmanager
def notes_service(state: NotesState) -> Iterator[str]:
    with serving(type("BoundNotesHandler", (NotesHandler,), {"state": state})) as url:
        yield url
