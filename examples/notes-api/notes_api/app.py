"""The HTTP API (Starlette). Errors answer {"detail": "..."}.

GET  /healthz        -> true (the process answers; the database is not touched)
POST /auth/token     form: username, password[, grant_type] -> {"access_token", "token_type"}
GET  /users/me       -> the caller
POST /users          JSON {"email", "password"} -> 201 (superusers only)
GET  /notes          -> {"data": [...], "count": N} (the caller's notes)
POST /notes          JSON {"title", "body"} -> 201
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from notes_api import security, settings, store

log = logging.getLogger("notes_api")
SETTINGS = settings.load()
MIN_PASSWORD_LENGTH = 8
_superuser_ready = False


def _error(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


async def _superuser() -> None:
    """Make sure the first superuser exists: at start-up, and again at a login while the
    database was not ready then (its schema is migrated by a separate step)."""
    global _superuser_ready
    if _superuser_ready:
        return
    try:
        _superuser_ready = await run_in_threadpool(
            store.ensure_superuser, SETTINGS.first_superuser, SETTINGS.first_superuser_password
        )
    except Exception as exc:  # the database may not be migrated yet
        log.warning("first superuser not created yet: %s", exc.__class__.__name__)


async def healthz(request: Request) -> Response:
    return JSONResponse(True)


async def token(request: Request) -> Response:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return _error(422, "the login is a form: application/x-www-form-urlencoded")
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    if form.get("grant_type", "password") != "password":
        return _error(422, "grant_type must be password")
    username, password = form.get("username", ""), form.get("password", "")
    if not username or not password:
        return _error(422, "username and password are required")
    await _superuser()
    user = await run_in_threadpool(store.user_by_email, username.strip().lower())
    ok = user is not None and await run_in_threadpool(
        security.verify_password, password, user["hashed_password"]
    )
    if not ok or user is None:
        return _error(400, "Incorrect email or password")
    issued = security.issue_token(SETTINGS.secret_key, user["id"], SETTINGS.token_ttl_s)
    return JSONResponse({"access_token": issued, "token_type": "bearer"})


Handler = Callable[[Request, dict[str, Any]], Awaitable[Response]]


def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        user_id = (
            security.token_user(SETTINGS.secret_key, credential.strip())
            if scheme.lower() == "bearer"
            else None
        )
        user = await run_in_threadpool(store.user_by_id, user_id) if user_id else None
        if user is None:
            return _error(401, "Not authenticated", **{"WWW-Authenticate": "Bearer"})
        return await handler(request, user)

    return endpoint


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def me(request: Request, user: dict[str, Any]) -> Response:
    return JSONResponse(
        {"id": user["id"], "email": user["email"], "is_superuser": user["is_superuser"]}
    )


async def create_user(request: Request, user: dict[str, Any]) -> Response:
    if not user["is_superuser"]:
        return _error(403, "The user doesn't have enough privileges")
    body = await _json_object(request)
    email = str((body or {}).get("email", "")).strip().lower()
    password = str((body or {}).get("password", ""))
    if "@" not in email or len(password) < MIN_PASSWORD_LENGTH:
        return _error(422, f"email and a password of {MIN_PASSWORD_LENGTH}+ characters required")
    created = await run_in_threadpool(store.create_user, email, password)
    if created is None:
        return _error(400, "The user with this email already exists in the system")
    return JSONResponse(created, status_code=201)


async def list_notes(request: Request, user: dict[str, Any]) -> Response:
    found = await run_in_threadpool(store.list_notes, user["id"])
    return JSONResponse({"data": found, "count": len(found)})


async def add_note(request: Request, user: dict[str, Any]) -> Response:
    body = await _json_object(request)
    title = (body or {}).get("title")
    text = (body or {}).get("body", "")
    if not isinstance(title, str) or not title.strip() or not isinstance(text, str):
        return _error(422, "title (a non-empty string) and body (a string) required")
    note = await run_in_threadpool(store.add_note, user["id"], title.strip()[:255], text)
    return JSONResponse(note, status_code=201)


async def notes(request: Request) -> Response:
    handler = add_note if request.method == "POST" else list_notes
    return await authenticated(handler)(request)


app = Starlette(
    routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/auth/token", token, methods=["POST"]),
        Route("/users/me", authenticated(me), methods=["GET"]),
        Route("/users", authenticated(create_user), methods=["POST"]),
        Route("/notes", notes, methods=["GET", "POST"]),
    ],
    on_startup=[_superuser],
)
