"""Create the first administrator from ADMIN_USERNAME and ADMIN_PASSWORD.

    python3 -m rbac_api.create_admin

Idempotent: an existing user keeps its password and is given the admin role if it lacks it.
There is no default password; an empty or short one is refused.
"""

from __future__ import annotations

import json
import os
import sys

from sqlalchemy import create_engine

from . import service
from .config import ConfigError, database_url
from .security import MIN_PASSWORD_LENGTH


def main() -> int:
    username = os.environ.get("ADMIN_USERNAME", "").strip()
    password = os.environ.get("ADMIN_PASSWORD", "")
    if not username:
        print("error: set ADMIN_USERNAME", file=sys.stderr)
        return 2
    if len(password) < MIN_PASSWORD_LENGTH:
        print(
            f"error: ADMIN_PASSWORD must be set to at least {MIN_PASSWORD_LENGTH} characters "
            "(there is no default); nothing was changed",
            file=sys.stderr,
        )
        return 2
    try:
        engine = create_engine(database_url(), future=True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with engine.begin() as conn:
        user = service.find_user(conn, username=username)
        if user is None:
            user_id = service.create_user(conn, username, password, ["admin"])
            outcome = "created"
        else:
            user_id = user["id"]
            outcome = (
                "role_assigned"
                if service.assign_role(conn, user_id, "admin", actor_id=None)
                else "unchanged"
            )
    print(
        json.dumps(
            {
                "level": "INFO",
                "message": "admin ensured",
                "username": username,
                "user_id": user_id,
                "outcome": outcome,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
