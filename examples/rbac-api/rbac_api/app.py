"""The Flask application: health, metrics, authentication, RBAC-protected resources."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from . import metrics, security, service
from .config import Settings
from .db import alembic_revision, make_engine
from .models import documents, permissions, role_permissions, roles, users

log = logging.getLogger("rbac_api")


def error(status: int, code: str, message: str, **extra: object) -> tuple[Response, int]:
    """Every error answer has this one shape: {"error": {"code", "message", ...}}."""
    return jsonify({"error": {"code": code, "message": message, **extra}}), status


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    engine = make_engine(settings.database_url, connect_timeout_s=settings.db_connect_timeout_s)
    app = Flask("rbac_api")
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["rbac_engine"] = engine
    metrics.APP_INFO.labels(version=settings.version).set(1)

    # ---- request bookkeeping: metrics and one JSON log line per request -------------------------
    @app.before_request
    def _start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        metrics.HTTP_LATENCY.labels(request.method, route).observe(elapsed)
        if route not in ("/health", "/metrics"):
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "route": route,
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 400: "invalid_request"}.get(
            exc.code or 500, "http_error"
        )
        return error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(service.ServiceError)
    def _service_error(exc: service.ServiceError):
        return error(exc.status, exc.code, exc.message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.error("unhandled error", exc_info=exc, extra={"path": request.path})
        return error(500, "internal_error", "the server failed to handle the request")

    # ---- authentication and permission checks ----------------------------------------------------
    def authenticated(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            user_id = (
                security.read_token(settings.secret_key, token.strip())
                if scheme.lower() == "bearer"
                else None
            )
            if user_id is None:
                return error(
                    401, "unauthorized", "a valid bearer token is required (POST /auth/login)"
                )
            with engine.connect() as conn:
                user = service.find_user(conn, user_id=user_id)
                if user is None or not user["is_active"]:
                    return error(
                        401, "unauthorized", "the token's user no longer exists or is disabled"
                    )
                g.user = dict(user)
                g.permissions = service.permission_names(conn, user_id)
            return view(*args, **kwargs)

        return wrapper

    def requires(permission: str) -> Callable:
        def decorate(view: Callable) -> Callable:
            @authenticated
            @functools.wraps(view)
            def wrapper(*args, **kwargs):
                started = time.perf_counter()
                allowed = permission in g.permissions
                metrics.PERMISSION_CHECK_LATENCY.labels(
                    permission, "allowed" if allowed else "denied"
                ).observe(time.perf_counter() - started)
                if not allowed:
                    log.info(
                        "permission denied",
                        extra={
                            "user": g.user["username"],
                            "permission": permission,
                            "path": request.path,
                        },
                    )
                    return error(
                        403,
                        "forbidden",
                        f"this action requires the permission {permission!r}",
                        required_permission=permission,
                    )
                return view(*args, **kwargs)

            return wrapper

        return decorate

    def body() -> dict:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise service.ServiceError(400, "invalid_request", "expected a JSON object body")
        return data

    def slow_down() -> None:
        # Off by default: RBAC_API_SLOW_MS makes /documents slow on purpose, for latency checks.
        if settings.slow_ms > 0:
            time.sleep(settings.slow_ms / 1000)

    # ---- operational endpoints -------------------------------------------------------------------
    @app.get("/health")
    def health():
        started = time.perf_counter()
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                round_trip_ms = (time.perf_counter() - started) * 1000
                revision = alembic_revision(conn)
        except SQLAlchemyError as exc:
            log.error(
                "health check: database unreachable", extra={"error": str(exc).splitlines()[0]}
            )
            return jsonify(
                {
                    "status": "unavailable",
                    "version": settings.version,
                    "database": {
                        "reachable": False,
                        "round_trip_ms": None,
                        "alembic_revision": None,
                        "error": type(exc).__name__,
                    },
                }
            ), 503
        return jsonify(
            {
                "status": "ok" if revision else "degraded",
                "version": settings.version,
                "database": {
                    "reachable": True,
                    "round_trip_ms": round(round_trip_ms, 2),
                    "alembic_revision": revision,
                },
            }
        ), 200

    @app.get("/metrics")
    def prometheus_metrics():
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)

    # ---- authentication --------------------------------------------------------------------------
    @app.post("/auth/login")
    def login():
        data = request.get_json(silent=True)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("username"), str)
            or not isinstance(data.get("password"), str)
        ):
            metrics.LOGINS.labels(outcome="bad_request").inc()
            return error(400, "invalid_request", 'expected JSON {"username": ..., "password": ...}')
        with engine.connect() as conn:
            user = service.find_user(conn, username=data["username"])
        if (
            user is None
            or not user["is_active"]
            or not security.verify_password(data["password"], user["password_hash"])
        ):
            metrics.LOGINS.labels(outcome="invalid_credentials").inc()
            log.info("login failed", extra={"username": data["username"]})
            return error(401, "unauthorized", "invalid username or password")
        metrics.LOGINS.labels(outcome="success").inc()
        token = security.issue_token(settings.secret_key, user["id"], settings.token_ttl_seconds)
        return jsonify(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": settings.token_ttl_seconds,
            }
        )

    @app.get("/me")
    @authenticated
    def me():
        with engine.connect() as conn:
            role_list = service.role_names(conn, g.user["id"])
        return jsonify(
            {
                "id": g.user["id"],
                "username": g.user["username"],
                "roles": role_list,
                "permissions": sorted(g.permissions),
            }
        )

    # ---- roles and users (admin) -----------------------------------------------------------------
    @app.get("/roles")
    @authenticated
    def list_roles():
        with engine.connect() as conn:
            rows = conn.execute(
                select(roles.c.name, roles.c.description, permissions.c.name.label("permission"))
                .select_from(roles)
                .outerjoin(role_permissions, role_permissions.c.role_id == roles.c.id)
                .outerjoin(permissions, permissions.c.id == role_permissions.c.permission_id)
                .order_by(roles.c.name, permissions.c.name)
            ).all()
        result: dict[str, dict] = {}
        for name, description, permission in rows:
            entry = result.setdefault(
                name, {"name": name, "description": description, "permissions": []}
            )
            if permission:
                entry["permissions"].append(permission)
        return jsonify({"roles": list(result.values())})

    @app.get("/users")
    @requires("users:manage")
    def list_users():
        with engine.connect() as conn:
            rows = conn.execute(
                select(users.c.id, users.c.username, users.c.is_active).order_by(users.c.id)
            ).all()
            listing = [
                {
                    "id": r.id,
                    "username": r.username,
                    "is_active": r.is_active,
                    "roles": service.role_names(conn, r.id),
                }
                for r in rows
            ]
        return jsonify({"users": listing})

    @app.post("/users")
    @requires("users:manage")
    def create_user():
        data = body()
        role_list = data.get("roles", [])
        if (
            not isinstance(data.get("username"), str)
            or not isinstance(data.get("password"), str)
            or not isinstance(role_list, list)
        ):
            return error(
                400,
                "invalid_request",
                'expected {"username": str, "password": str, "roles": [str]}',
            )
        with engine.begin() as conn:
            new_id = service.create_user(conn, data["username"], data["password"], role_list)
            role_list = service.role_names(conn, new_id)
        log.info("user created", extra={"actor": g.user["username"], "username": data["username"]})
        return jsonify({"id": new_id, "username": data["username"], "roles": role_list}), 201

    @app.post("/users/<int:user_id>/roles")
    @requires("roles:assign")
    def assign_role(user_id: int):
        role = body().get("role")
        if not isinstance(role, str):
            return error(400, "invalid_request", 'expected {"role": str}')
        with engine.begin() as conn:
            changed = service.assign_role(conn, user_id, role, actor_id=g.user["id"])
            role_list = service.role_names(conn, user_id)
        log.info(
            "role assigned",
            extra={
                "actor": g.user["username"],
                "user_id": user_id,
                "role": role,
                "changed": changed,
            },
        )
        return jsonify({"user_id": user_id, "roles": role_list, "changed": changed}), 200

    @app.delete("/users/<int:user_id>/roles/<role>")
    @requires("roles:assign")
    def revoke_role(user_id: int, role: str):
        with engine.begin() as conn:
            changed = service.revoke_role(conn, user_id, role, actor_id=g.user["id"])
            role_list = service.role_names(conn, user_id)
        log.info(
            "role revoked",
            extra={
                "actor": g.user["username"],
                "user_id": user_id,
                "role": role,
                "changed": changed,
            },
        )
        return jsonify({"user_id": user_id, "roles": role_list, "changed": changed}), 200

    # ---- documents: viewers read, editors write --------------------------------------------------
    def document_json(row) -> dict:
        return {
            "id": row.id,
            "title": row.title,
            "body": row.body,
            "owner_id": row.owner_id,
            "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(),
        }

    @app.get("/documents")
    @requires("documents:read")
    def list_documents():
        slow_down()
        with engine.connect() as conn:
            rows = conn.execute(select(documents).order_by(documents.c.id)).all()
        return jsonify({"documents": [document_json(r) for r in rows]})

    @app.get("/documents/<int:document_id>")
    @requires("documents:read")
    def get_document(document_id: int):
        slow_down()
        with engine.connect() as conn:
            row = conn.execute(select(documents).where(documents.c.id == document_id)).first()
        if row is None:
            return error(404, "not_found", f"document {document_id} does not exist")
        return jsonify(document_json(row))

    @app.post("/documents")
    @requires("documents:write")
    def create_document():
        slow_down()
        data = body()
        if not isinstance(data.get("title"), str) or not data["title"].strip():
            return error(400, "invalid_request", 'expected {"title": str, "body": str}')
        with engine.begin() as conn:
            row = conn.execute(
                insert(documents)
                .values(title=data["title"], body=str(data.get("body", "")), owner_id=g.user["id"])
                .returning(*documents.c)
            ).first()
        return jsonify(document_json(row)), 201

    @app.put("/documents/<int:document_id>")
    @requires("documents:write")
    def update_document(document_id: int):
        slow_down()
        data = body()
        changes = {k: str(data[k]) for k in ("title", "body") if k in data}
        with engine.begin() as conn:
            row = conn.execute(
                update(documents)
                .where(documents.c.id == document_id)
                .values(**changes, updated_at=text("now()"))
                .returning(*documents.c)
            ).first()
        if row is None:
            return error(404, "not_found", f"document {document_id} does not exist")
        return jsonify(document_json(row))

    return app
