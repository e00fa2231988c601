"""URLs and Docker hosts from deploy.toml, checked once when the file is loaded.

A URL with no host, a bad port or a space would otherwise fail far away (smoke exits 1 and the
release is taken for bad); a URL with credentials would print them. Each check returns what is
wrong in a few words, or None; the caller names the key. Nothing here echoes a password.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

from deploytools.visible import is_invisible

#: A DNS name or an IPv4 address: ASCII letters, digits, "-", "_" and dots between labels.
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", re.ASCII)
#: userinfo in any URL of a text: scheme://user:password@ (or scheme://user@).
_USERINFO_RE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def without_credentials(text: str) -> str:
    """`text` with the user:password of every URL in it replaced by "***"."""
    return _USERINFO_RE.sub(lambda m: f"{m['scheme']}***@", text)


def _host_problem(host: str) -> str | None:
    if host.startswith("[") or ":" in host:
        try:
            ipaddress.IPv6Address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return "has an invalid IPv6 address"
        return None
    labels = host.rstrip(".").split(".")
    if not all(_HOST_RE.fullmatch(label) for label in labels):
        return "has an invalid host name (ASCII letters, digits, '-' and dots; IDN as punycode)"
    return None


def _split(url: str) -> tuple[SplitResult | None, str | None]:
    if any(c.isspace() or is_invisible(c) for c in url):
        return None, "must not contain spaces or control characters"
    try:
        return urlsplit(url), None
    except ValueError as exc:
        return None, f"is not a URL ({exc})"


def url_problem(url: str, *, schemes: Sequence[str] = ("http", "https")) -> str | None:
    """What is wrong with an HTTP(S) URL of the configuration, or None.

    Refused: another scheme, no host, an invalid host, a port outside 1-65535, credentials
    (they belong in secrets, never in the file), a query or a fragment.
    """
    parts, problem = _split(url)
    if parts is None:
        return problem
    wanted = " or ".join(f"{s}://" for s in schemes)
    if parts.scheme.lower() not in schemes or not url.lower().startswith(f"{parts.scheme}://"):
        return f"must start with {wanted}"
    return _netloc_problem(parts, user_allowed=False) or (
        "must not have a query or a fragment" if parts.query or parts.fragment else None
    )


def _netloc_problem(parts: SplitResult, *, user_allowed: bool) -> str | None:
    if "@" in parts.netloc and (not user_allowed or ":" in parts.netloc.rpartition("@")[0]):
        return "must not hold credentials (user:password@); put them in secrets"
    if not parts.hostname:
        return "has no host"
    problem = _host_problem(parts.hostname)
    if problem:
        return problem
    try:
        port = parts.port
    except ValueError:
        return "has an invalid port (a number from 1 to 65535)"
    if port == 0:
        return "has an invalid port (a number from 1 to 65535)"
    return None


DOCKER_HOST_SCHEMES = ("unix", "tcp", "ssh", "npipe")


def docker_host_problem(host: str) -> str | None:
    """What is wrong with a docker_host (DOCKER_HOST's meaning), or None for a usable one."""
    parts, problem = _split(host)
    if parts is None:
        return problem
    if parts.scheme not in DOCKER_HOST_SCHEMES or not host.startswith(f"{parts.scheme}://"):
        return "must start with one of " + ", ".join(f"{s}://" for s in DOCKER_HOST_SCHEMES)
    if parts.scheme in ("unix", "npipe"):
        if parts.scheme == "unix" and (parts.netloc or not parts.path.startswith("/")):
            return "must name the engine's socket: unix:///absolute/path"
        if not parts.path.strip("/"):
            return "must name the engine's socket or pipe"
        return None
    # ssh://user@host names the login (the key is in the agent); a password never belongs here.
    problem = _netloc_problem(parts, user_allowed=parts.scheme == "ssh")
    if problem:
        return problem
    if parts.query or parts.fragment or parts.path.strip("/"):
        return "must be SCHEME://HOST[:PORT] with no path, query or fragment"
    return None
