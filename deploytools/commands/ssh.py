"""Argv for ssh, used to check an ssh:// engine before the docker SDK is pointed at it."""

from __future__ import annotations

from urllib.parse import urlsplit


def engine_probe(docker_host: str, *, connect_timeout_s: int) -> list[str]:
    """Asks the remote engine for its API version over ssh, never prompting for anything.

    BatchMode turns a password or host-key prompt into an error instead of a hang; the
    connect timeout bounds the TCP connection and the server's banner.
    """
    parts = urlsplit(docker_host)
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout_s}"]
    if parts.port:
        argv += ["-p", str(parts.port)]
    destination = f"{parts.username}@{parts.hostname}" if parts.username else str(parts.hostname)
    return [*argv, "--", destination, "docker", "version", "--format", "{{.Server.APIVersion}}"]
