"""Operations on users and roles, shared by the HTTP API and the create_admin command."""

from __future__ import annotations

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.engine import Connection

from . import security
from .models import permissions, role_permissions, roles, user_roles, users


class ServiceError(Exception):
    """A request the data does not allow; carries an HTTP status and an error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def find_user(conn: Connection, *, username: str | None = None, user_id: int | None = None):
    query = select(users)
    query = (
        query.where(users.c.username == username)
        if username is not None
        else query.where(users.c.id == user_id)
    )
    return conn.execute(query).mappings().first()


def role_names(conn: Connection, user_id: int) -> list[str]:
    query = (
        select(roles.c.name)
        .join(user_roles, user_roles.c.role_id == roles.c.id)
        .where(user_roles.c.user_id == user_id)
        .order_by(roles.c.name)
    )
    return list(conn.execute(query).scalars())


def permission_names(conn: Connection, user_id: int) -> set[str]:
    query = (
        select(permissions.c.name)
        .join(role_permissions, role_permissions.c.permission_id == permissions.c.id)
        .join(user_roles, user_roles.c.role_id == role_permissions.c.role_id)
        .where(user_roles.c.user_id == user_id)
    )
    return set(conn.execute(query).scalars())


def role_id(conn: Connection, name: str) -> int:
    found = conn.execute(select(roles.c.id).where(roles.c.name == name)).scalar()
    if found is None:
        raise ServiceError(404, "unknown_role", f"role {name!r} does not exist")
    return found


def create_user(conn: Connection, username: str, password: str, role_list: list[str]) -> int:
    if not username or len(username) > 64:
        raise ServiceError(400, "invalid_request", "username must be 1 to 64 characters")
    if len(password) < security.MIN_PASSWORD_LENGTH:
        raise ServiceError(
            400,
            "invalid_request",
            f"password must be at least {security.MIN_PASSWORD_LENGTH} characters",
        )
    if find_user(conn, username=username) is not None:
        raise ServiceError(409, "conflict", f"user {username!r} already exists")
    role_ids = [role_id(conn, name) for name in role_list]
    new_id = conn.execute(
        insert(users)
        .values(username=username, password_hash=security.hash_password(password))
        .returning(users.c.id)
    ).scalar_one()
    for rid in role_ids:
        conn.execute(insert(user_roles).values(user_id=new_id, role_id=rid))
    return new_id


def assign_role(conn: Connection, user_id: int, role: str, *, actor_id: int | None) -> bool:
    """Give a user a role; False if they already had it."""
    if find_user(conn, user_id=user_id) is None:
        raise ServiceError(404, "not_found", f"user {user_id} does not exist")
    rid = role_id(conn, role)
    held = conn.execute(
        select(user_roles).where(and_(user_roles.c.user_id == user_id, user_roles.c.role_id == rid))
    ).first()
    if held is not None:
        return False
    conn.execute(insert(user_roles).values(user_id=user_id, role_id=rid))
    return True


def revoke_role(conn: Connection, user_id: int, role: str, *, actor_id: int | None) -> bool:
    """Take a role away; False if the user did not have it."""
    if find_user(conn, user_id=user_id) is None:
        raise ServiceError(404, "not_found", f"user {user_id} does not exist")
    rid = role_id(conn, role)
    result = conn.execute(
        delete(user_roles).where(and_(user_roles.c.user_id == user_id, user_roles.c.role_id == rid))
    )
    return result.rowcount > 0
