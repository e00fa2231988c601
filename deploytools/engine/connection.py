"""Connecting to a Docker engine: the local socket, `ssh://user@host` or `tcp://host:port`
(the same meaning as DOCKER_HOST), checked with a ping within a deadline.

The docker SDK is imported here, inside `connect`, so that importing deploytools (and
`deploytools --help`) does not load it.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deploytools.commands import ssh as ssh_cmd
from deploytools.engine import process
from deploytools.engine.client import Engine
from deploytools.errors import EnvironmentUnreachable, UsageError
from deploytools.urls import docker_host_problem, without_credentials
from deploytools.visible import visible

#: How long connecting to an engine may take before it counts as unreachable.
CONNECT_TIMEOUT_S = 6.0
LOCAL_SOCKET = "/var/run/docker.sock"


def _probe_tcp(host: str, port: int, timeout: float, docker_host: str) -> None:
    """Fail within `timeout` when nothing accepts connections at host:port.

    The docker SDK's own timeouts do not cover an ssh:// engine (ssh decides how long to try),
    so a dead host is found here, quickly, before any client is made.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise EnvironmentUnreachable(
            f"cannot reach the Docker engine at {docker_host}: {exc.strerror or exc}",
            untouched="nothing was done on that environment",
            hint="check the host, the network and DOCKER_HOST (or docker_host in deploy.toml)",
            facts={"docker_host": docker_host},
        ) from None


def _probe_ssh(docker_host: str, timeout: float) -> None:
    """Fail within `timeout` when ssh cannot log in and reach `docker` on the remote host.

    The SDK's ssh transport has no deadline of its own (ssh waits for a banner that may never
    come), so this bounded probe runs first and its process is killed at the deadline.
    """
    argv = ssh_cmd.engine_probe(docker_host, connect_timeout_s=max(1, int(timeout)))
    try:
        done = process.run(argv, env=process.child_env(engine=True), timeout=timeout)
    except process.ProcessTimedOut:
        raise EnvironmentUnreachable(
            f"the Docker engine at {docker_host} did not answer over ssh within {timeout:.0f} s",
            untouched="nothing was done on that environment",
            hint="check that the host is up and that sshd answers",
            facts={"docker_host": docker_host, "timeout_s": timeout},
        ) from None
    except process.ProgramNotFound:
        raise EnvironmentUnreachable(
            f"cannot reach the Docker engine at {docker_host}: ssh is not installed",
            untouched="nothing was done on that environment",
            hint="install an ssh client (Debian: openssh-client)",
            facts={"docker_host": docker_host},
        ) from None
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()
        raise EnvironmentUnreachable(
            f"cannot reach the Docker engine at {docker_host} over ssh: "
            + (detail[-1] if detail else f"ssh exited with {done.returncode}"),
            untouched="nothing was done on that environment",
            hint="check the host, your ssh key and known_hosts, and that the user may run docker",
            facts={"docker_host": docker_host},
        )


def connect(docker_host: str = "", *, timeout: float = CONNECT_TIMEOUT_S) -> Engine:
    """The engine at `docker_host` ("" means DOCKER_HOST or the local socket), checked with a
    ping so that an engine that is not there fails now, within `timeout`, not later."""
    host = docker_host or os.environ.get("DOCKER_HOST", "")
    shown = host or f"the local engine (unix://{LOCAL_SOCKET})"
    # deploy.toml's docker_host is checked when it is loaded; DOCKER_HOST is checked here, so
    # that "tcp://host:99999" is a usage error and not a ValueError deep in a port lookup.
    problem = docker_host_problem(host) if host else None
    if problem:
        source = "docker_host" if docker_host else "DOCKER_HOST"
        safe = without_credentials(visible(host))
        raise UsageError(
            f'{source} {problem}, got "{safe}"',
            untouched="nothing was done",
            hint="use unix:///PATH, tcp://HOST:PORT or ssh://USER@HOST[:PORT], or unset it",
            facts={"docker_host": safe},
        )
    parts = urlsplit(host) if host else None
    socket_path = LOCAL_SOCKET
    if parts is not None and parts.scheme in ("ssh", "tcp"):
        default_port = 22 if parts.scheme == "ssh" else 2375
        _probe_tcp(parts.hostname or "localhost", parts.port or default_port, timeout, host)
    if parts is not None and parts.scheme == "ssh":
        _probe_ssh(host, timeout)
    if parts is None or parts.scheme == "unix":
        socket_path = parts.path if parts else socket_path
        if not Path(socket_path).exists():
            raise EnvironmentUnreachable(
                f"no Docker engine is running here: {socket_path} does not exist",
                untouched="nothing was done",
                hint="start the engine (scripts/bootstrap does it on Debian) or set DOCKER_HOST",
                facts={"docker_host": shown},
            )

    def make_client() -> Any:
        defer_paramiko()
        # The SDK loads here, when a client is made: `deploytools --help` never pays for it.
        import docker

        if host:
            # For ssh://, shell out to the user's ssh: their config, agent and known_hosts apply.
            client = docker.DockerClient(
                base_url=host, timeout=int(timeout), use_ssh_client=host.startswith("ssh://")
            )
        else:
            client = docker.DockerClient(base_url=f"unix://{socket_path}", timeout=int(timeout))
        try:
            client.ping()
        except BaseException:
            client.close()
            raise
        return client

    return Engine(_within(make_client, timeout, shown), host=host)


def defer_paramiko() -> None:
    """Let the docker SDK import paramiko without loading it (a third of the SDK's import time,
    0.1-0.2 s of every command's start): paramiko loads on its first real use.

    The SDK imports paramiko at the top of its ssh transport, for its own ssh client; we
    connect to ssh:// engines with the system's ssh (`use_ssh_client`), which never touches
    paramiko. A stand-in module takes its place in sys.modules until an attribute of it is
    asked for; then the real one is imported and the stand-in takes its attributes."""
    if "paramiko" in sys.modules:
        return
    stand_in = types.ModuleType("paramiko", "deploytools' stand-in: paramiko loads when used")

    def load(name: str) -> Any:
        if sys.modules.get("paramiko") is stand_in:
            del sys.modules["paramiko"]
        real = importlib.import_module("paramiko")
        stand_in.__dict__.update({k: v for k, v in vars(real).items() if k != "__getattr__"})
        return getattr(real, name)

    stand_in.__getattr__ = load  # type: ignore[method-assign]
    sys.modules["paramiko"] = stand_in


def _within(make_client: Callable[[], Any], timeout: float, shown: str) -> Any:
    """Make and ping a client, giving up after `timeout` seconds whatever the transport does.

    The SDK's timeout covers HTTP reads, but an ssh:// transport can wait far longer (ssh itself
    waits for a server banner that may never come, even while the SDK negotiates the API
    version), so the whole connection runs in a thread with a deadline.
    """
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            outcome["client"] = make_client()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, name="docker-connect", daemon=True)
    worker.start()
    # The SDK's own timeout fires first; the margin lets it clean up after itself.
    worker.join(timeout + 2)
    if "client" in outcome:
        return outcome["client"]
    if "error" in outcome:
        raise EnvironmentUnreachable(
            f"the Docker engine at {shown} does not answer: {_short(outcome['error'])}",
            untouched="nothing was done on that environment",
            hint="check that dockerd runs there and that you may use it",
            facts={"docker_host": shown},
        ) from None
    raise EnvironmentUnreachable(
        f"the Docker engine at {shown} did not answer within {timeout:.0f} s",
        untouched="nothing was done on that environment",
        hint="check that the host is up and that dockerd runs there",
        facts={"docker_host": shown, "timeout_s": timeout},
    )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
