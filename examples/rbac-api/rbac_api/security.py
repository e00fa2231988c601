"""Password hashing (stdlib scrypt) and HMAC-signed bearer tokens (stdlib hmac)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

MIN_PASSWORD_LENGTH = 12
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = hashlib.scrypt(
            password.encode("utf-8"), salt=_unb64(salt), n=int(n), r=int(r), p=int(p)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate, _unb64(digest))


def issue_token(secret_key: bytes, user_id: int, ttl_seconds: int) -> str:
    payload = _b64(
        json.dumps({"sub": user_id, "exp": int(time.time()) + ttl_seconds}).encode("utf-8")
    )
    signature = _b64(hmac.new(secret_key, payload.encode("ascii"), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def read_token(secret_key: bytes, token: str) -> int | None:
    """The user id in a valid, unexpired token; None otherwise."""
    try:
        payload, signature = token.split(".")
        expected = _b64(hmac.new(secret_key, payload.encode("ascii"), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature):
            return None
        claims = json.loads(_unb64(payload))
        if int(claims["exp"]) < time.time():
            return None
        return int(claims["sub"])
    except (ValueError, KeyError, TypeError):
        return None
