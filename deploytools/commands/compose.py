"""Argv for Docker Compose: v2 (`docker compose`) or v1 (`docker-compose`), as detected."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ComposeCli:
    """How Compose is invoked on this machine: the argv prefix and the major version."""

    prefix: tuple[str, ...]
    version: str

    @property
    def major(self) -> int:
        return 2 if self.prefix == ("docker", "compose") else 1


COMPOSE_V2 = ("docker", "compose")
COMPOSE_V1 = ("docker-compose",)


def version_probe(prefix: Sequence[str]) -> list[str]:
    """Asks one Compose candidate for its version, for detection."""
    return [*prefix, "version", "--short"]


def base(cli: ComposeCli, project: str, files: Sequence[str]) -> list[str]:
    """The common head of every Compose call: the pinned project name and the files."""
    argv = [*cli.prefix, "--project-name", project]
    for f in files:
        argv += ["--file", f]
    return argv


def up(
    cli: ComposeCli,
    project: str,
    files: Sequence[str],
    services: Sequence[str] = (),
    *,
    no_deps: bool = False,
    force_recreate: bool = False,
    no_recreate: bool = False,
    scale: Mapping[str, int] | None = None,
) -> list[str]:
    """`no_recreate` with `scale` adds containers beside the running ones (a rolling deploy's
    new release) without touching them, whatever their configuration."""
    argv = [*base(cli, project, files), "up", "--detach"]
    if no_deps:
        argv.append("--no-deps")
    if force_recreate:
        argv.append("--force-recreate")
    if no_recreate:
        argv.append("--no-recreate")
    for service, count in sorted((scale or {}).items()):
        argv += ["--scale", f"{service}={count}"]
    return [*argv, *services]


def stop(
    cli: ComposeCli,
    project: str,
    files: Sequence[str],
    services: Sequence[str] = (),
    *,
    timeout_s: int = 10,
) -> list[str]:
    return [*base(cli, project, files), "stop", "--timeout", str(timeout_s), *services]


def rm(cli: ComposeCli, project: str, files: Sequence[str], services: Sequence[str]) -> list[str]:
    """Removes stopped service containers (never volumes)."""
    return [*base(cli, project, files), "rm", "--force", "--stop", *services]


def down(
    cli: ComposeCli, project: str, files: Sequence[str], *, volumes: bool = False
) -> list[str]:
    argv = [*base(cli, project, files), "down", "--remove-orphans"]
    if volumes:
        argv.append("--volumes")
    return argv


def run_once(
    cli: ComposeCli,
    project: str,
    files: Sequence[str],
    service: str,
    command: Sequence[str],
    *,
    env: Sequence[str] = (),
) -> list[str]:
    """A one-off container of `service` on the stack's network, removed when it exits.

    `env` holds variable names only (`-e NAME`): Compose takes the value from its own
    environment, so a secret never appears in an argv that `ps` can show.
    """
    argv = [*base(cli, project, files), "run", "--rm", "--no-deps", "-T"]
    for name in env:
        argv += ["-e", name]
    return [*argv, service, *command]


def service_names(cli: ComposeCli, project: str, files: Sequence[str]) -> list[str]:
    """Prints the names of the services the files define, one a line."""
    return [*base(cli, project, files), "config", "--services"]


def config(cli: ComposeCli, project: str, files: Sequence[str]) -> list[str]:
    """Validates and prints the resolved Compose file (variables substituted)."""
    return [*base(cli, project, files), "config", "--quiet"]
