"""The Docker side of an environment: its engine, its Compose project, its containers.

An environment is an engine (the local one, or `ssh://user@host`, `tcp://host:port`, with the
same meaning as DOCKER_HOST) plus a Compose project on it. Everything that touches Docker goes
through `Target`; argv for Compose comes from `deploytools.commands.compose`.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors

from deploytools.commands import compose as compose_cmd
from deploytools.commands import ssh as ssh_cmd
from deploytools.config import Config, EnvironmentConfig
from deploytools.errors import (
    ConfigError,
    DeadlineExceeded,
    EnvironmentUnreachable,
    ExternalCommandFailed,
)

#: How long connecting to an engine may take before it counts as unreachable.
CONNECT_TIMEOUT_S = 6.0
VERSION_LABEL = "org.opencontainers.image.version"
REVISION_LABEL = "org.opencontainers.image.revision"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def default_runner(
    argv: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs argv (never through a shell) and captures its output as text."""
    return subprocess.run(
        list(argv),
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
        done = default_runner(argv, env=os.environ, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EnvironmentUnreachable(
            f"the Docker engine at {docker_host} did not answer over ssh within {timeout:.0f} s",
            untouched="nothing was done on that environment",
            hint="check that the host is up and that sshd answers",
            facts={"docker_host": docker_host, "timeout_s": timeout},
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


def connect(docker_host: str = "", *, timeout: float = CONNECT_TIMEOUT_S) -> Any:
    """A docker SDK client for `docker_host` ("" means DOCKER_HOST or the local socket), checked
    with a ping so that an engine that is not there fails now, within `timeout`, not later."""
    host = docker_host or os.environ.get("DOCKER_HOST", "")
    shown = host or "the local engine (unix:///var/run/docker.sock)"
    parts = urlsplit(host) if host else None
    socket_path = "/var/run/docker.sock"
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

    return _within(make_client, timeout, shown)


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


@functools.cache
def detect_compose(docker_host: str = "") -> compose_cmd.ComposeCli:
    """Compose v2 (`docker compose`) when the plugin exists, else v1 (`docker-compose`)."""
    env = _compose_environ(docker_host)
    for prefix in (compose_cmd.COMPOSE_V2, compose_cmd.COMPOSE_V1):
        if shutil.which(prefix[0]) is None:
            continue
        try:
            done = default_runner(compose_cmd.version_probe(prefix), env=env, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip():
            return compose_cmd.ComposeCli(prefix=prefix, version=done.stdout.strip())
    raise EnvironmentUnreachable(
        "Docker Compose is not installed: neither `docker compose` nor `docker-compose` works",
        untouched="nothing was done",
        hint="install the compose plugin or Debian's docker-compose package",
    )


def _compose_environ(docker_host: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class ServiceState:
    """One container of a Compose project, as `deploytools status` shows it."""

    service: str
    container: str
    image: str
    image_id: str
    version: str | None
    revision: str | None
    state: str
    health: str | None
    started_at: str
    repo_digests: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.state == "running" and self.health in (None, "healthy")


@dataclass
class Target:
    """One environment: its engine (connected lazily, once) and its Compose project."""

    config: Config
    environment: EnvironmentConfig
    runner: Runner = default_runner
    _client: Any = field(default=None, init=False, repr=False)

    @classmethod
    def for_environment(cls, config: Config, name: str, runner: Runner = default_runner) -> Target:
        return cls(config=config, environment=config.environment(name), runner=runner)

    @property
    def name(self) -> str:
        return self.environment.name

    @property
    def project(self) -> str:
        return self.environment.compose_project

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.environment.docker_host)
        return self._client

    # -- Compose ---------------------------------------------------------------------------

    def compose_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment Compose runs with: ours, the environment's variables, then `extra`."""
        env = _compose_environ(self.environment.docker_host, self.environment.variables)
        env.update(extra or {})
        return env

    def compose_files(self) -> list[str]:
        files = [str(p) for p in self.config.compose_file_paths()]
        missing = [f for f in files if not Path(f).exists()]
        if missing:
            raise ConfigError(
                f"Compose file {missing[0]} (project.compose_files) does not exist",
                untouched="nothing was done",
            )
        return files

    def compose(
        self,
        build: Callable[[compose_cmd.ComposeCli, str, list[str]], list[str]],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 300,
        what: str = "docker compose",
    ) -> subprocess.CompletedProcess[str]:
        """Runs one Compose command built by `build(cli, project, files)`; raises on failure."""
        cli = detect_compose(self.environment.docker_host)
        argv = build(cli, self.project, self.compose_files())
        try:
            done = self.runner(
                argv, env=self.compose_env(env), timeout=timeout, cwd=str(self.config.root)
            )
        except subprocess.TimeoutExpired:
            raise DeadlineExceeded(
                f"{what} did not finish within {timeout:.0f} s on environment {self.name}",
                hint="look at `deploytools status --env " + self.name + "` and the engine's logs",
                facts={"argv": argv},
            ) from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise ExternalCommandFailed(
                f"{what} failed on environment {self.name} (exit {done.returncode}): "
                + (detail[-1] if detail else "no output"),
                facts={"argv": argv, "stderr": done.stderr[-4000:], "stdout": done.stdout[-4000:]},
            )
        return done

    # -- Containers ------------------------------------------------------------------------

    def containers(self, service: str | None = None, *, include_stopped: bool = True) -> list[Any]:
        """The project's service containers (one-off `run` containers excluded)."""
        labels = [f"{PROJECT_LABEL}={self.project}"]
        if service:
            labels.append(f"{SERVICE_LABEL}={service}")
        found = self.client.containers.list(all=include_stopped, filters={"label": labels})
        return [c for c in found if c.labels.get(ONEOFF_LABEL, "False") != "True"]

    def services(self) -> list[ServiceState]:
        """What runs in this environment, one entry per container, sorted by service."""
        states = [service_state(c) for c in self.containers()]
        return sorted(states, key=lambda s: (s.service, s.container))


def service_state(container: Any) -> ServiceState:
    attrs = container.attrs
    state = attrs.get("State", {})
    labels = container.labels
    image_id = attrs.get("Image", "")
    image_labels: Mapping[str, str] = {}
    digests: tuple[str, ...] = ()
    try:
        image = container.image
        image_labels = image.labels or {}
        digests = tuple(image.attrs.get("RepoDigests") or ())
    except docker.errors.ImageNotFound:
        pass
    return ServiceState(
        service=labels.get(SERVICE_LABEL, container.name),
        container=container.name,
        image=attrs.get("Config", {}).get("Image", ""),
        image_id=image_id,
        version=image_labels.get(VERSION_LABEL) or labels.get(VERSION_LABEL),
        revision=image_labels.get(REVISION_LABEL),
        state=state.get("Status", "unknown"),
        health=(state.get("Health") or {}).get("Status"),
        started_at=state.get("StartedAt", ""),
        repo_digests=digests,
    )


def last_health_log(container: Any) -> str:
    """The output of the container's most recent health probe, for error messages."""
    log = ((container.attrs.get("State") or {}).get("Health") or {}).get("Log") or []
    if not log:
        return "no health probe has run yet"
    last = log[-1]
    output = " ".join(str(last.get("Output", "")).split())
    return f"exit {last.get('ExitCode')}: {output[:300] or 'no output'}"


def wait_until_healthy(
    container: Any,
    *,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    first_delay_s: float = 0.2,
    max_delay_s: float = 0.5,
) -> ServiceState:
    """Wait until `container` is running and healthy (or running, if it has no healthcheck).

    Polls with exponential backoff up to a deadline. The backoff stops at half a second: the
    engine's answer is cheap, and a longer step is time a deploy or rollback (goal: 10 s)
    waits after its container is already healthy. Raises DeadlineExceeded naming the container
    and its last health log when the deadline passes, or at once when the container exits.
    """
    deadline = clock() + timeout_s
    delay = first_delay_s
    while True:
        container.reload()
        current = service_state(container)
        if current.healthy:
            return current
        if current.state in ("exited", "dead"):
            code = container.attrs.get("State", {}).get("ExitCode")
            raise DeadlineExceeded(
                f"container {container.name} exited (code {code}) instead of becoming healthy",
                hint=f"read its logs: docker logs {container.name}",
                facts={"container": container.name, "state": current.state, "exit_code": code},
            )
        if clock() >= deadline:
            raise DeadlineExceeded(
                f"container {container.name} is not healthy after {timeout_s:.0f} s "
                f"(state {current.state}, health {current.health or 'none'}); "
                f"last health check: {last_health_log(container)}",
                hint=f"read its logs: docker logs {container.name}",
                facts={
                    "container": container.name,
                    "state": current.state,
                    "health": current.health,
                    "last_health_log": last_health_log(container),
                },
            )
        sleep(min(delay, max(0.0, deadline - clock())))
        delay = min(delay * 2, max_delay_s)
