"""What an environment runs on, behind one interface: `Platform`.

Steps ask the platform for what they need ("start the app beside the running one", "run this
in the database service", "stop the app") and never find containers by label or build a
Compose argv themselves. Two platforms implement it: Compose on one engine
(`deploytools.target.Target`) and a Swarm cluster (`deploytools.platforms.swarm.SwarmPlatform`:
`docker stack deploy`, tasks on nodes instead of containers on one engine).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from deploytools.config import Config
from deploytools.engine.client import Container, Engine
from deploytools.engine.exec import DEFAULT_TIMEOUT_S, ExecResult
from deploytools.engine.process import ProcessResult
from deploytools.errors import EnvironmentUnreachable


class Platform(Protocol):
    """One environment's platform: its engine and the stack's services on it."""

    @property
    def name(self) -> str:
        """The environment's name (staging, production)."""
        ...

    @property
    def config(self) -> Config:
        """The configuration the environment belongs to."""
        ...

    @property
    def engine(self) -> Engine:
        """The engine the services run on (images, one-off containers)."""
        ...

    def defines(self, service: str) -> bool:
        """Whether the stack's files define `service`."""
        ...

    def containers(
        self, service: str | None = None, *, include_stopped: bool = True
    ) -> list[Container]:
        """The stack's service containers (of `service`, or all)."""
        ...

    def running(self, service: str) -> list[Container]:
        """The service's running containers."""
        ...

    def exec_in_service(
        self,
        service: str,
        argv: Sequence[str],
        *,
        stdin: Iterable[bytes] | None = None,
        timeout_s: float = ...,
    ) -> ExecResult:
        """Run argv in a running container of `service`."""
        ...

    def start(
        self, services: Sequence[str], *, env: Mapping[str, str] | None = None, what: str
    ) -> None:
        """Start (or recreate) `services` alone, their dependencies untouched."""
        ...

    def start_beside(
        self, service: str, *, count: int, env: Mapping[str, str] | None = None, what: str
    ) -> list[Container]:
        """Start new containers of `service` beside the running ones, up to `count` in all,
        without touching those; the new ones."""
        ...

    def stop(self, services: Sequence[str], *, what: str) -> None:
        """Stop `services`' containers (they stay, stopped)."""
        ...

    def paused(self, service: str, *, what: str) -> AbstractContextManager[None]:
        """`service` stopped for the block, then the very same release started again (not
        recreated from the files' current variables)."""
        ...

    def run_once(
        self,
        service: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        container_env: Mapping[str, str] | None = None,
        timeout_s: float,
        what: str,
    ) -> ProcessResult:
        """Run `command` in a one-off container of `service` (removed when it exits), with the
        stack's `env` and `container_env` set in the container; raises when it fails."""
        ...


def exec_in_running(
    platform: Platform,
    service: str,
    argv: Sequence[str],
    *,
    stdin: Iterable[bytes] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    none_running: str = "is not running",
) -> ExecResult:
    """Run argv in the first of `service`'s running containers on `platform` (both platforms'
    `exec_in_service`); EnvironmentUnreachable when none runs, saying so in the platform's
    words (`none_running`: what the service "is not running" or "has no running task")."""
    running = platform.running(service)
    if not running:
        raise EnvironmentUnreachable(
            f'the service "{service}" of environment {platform.name} {none_running}',
            untouched="nothing was done",
            hint=f"look at `deploytools status --env {platform.name}`",
            facts={"environment": platform.name, "service": service},
        )
    return running[0].exec(argv, stdin=stdin, timeout_s=timeout_s)


__all__ = ["Platform", "exec_in_running"]
