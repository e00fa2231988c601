"""Password hashes (PBKDF2) and signed bearer tokens (HMAC), from the standard library only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

ITERATIONS = 60_000


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)
    return f"pbkdf2_sha256${ITERATIONS}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    found = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    return hmac.compare_digest(found.hex(), digest)


def _sign(secret: str, payload: str) -> str:
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def issue_token(secret: str, user_id: int, ttl_s: int) -> str:
    payload = f"{user_id}.{int(time.time()) + ttl_s}"
    return f"{payload}.{_sign(secret, payload)}"


def token_user(secret: str, token: str) -> int | None:
    """The user ID a valid, unexpired token was issued to; None otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or not all(p for p in parts):
        return None
    payload = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(secret, payload), parts[2]):
        return None
    try:
        user_id, expires = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return user_id if expires > time.time() else None
