"""`deploytools status`: what runs in an environment, or that nothing does."""

from __future__ import annotations

from dataclasses import dataclass

from deploytools.context import StepContext
from deploytools.target import ServiceState


@dataclass(frozen=True)
class EnvironmentStatus:
    environment: str
    docker_host: str
    compose_project: str
    services: tuple[ServiceState, ...]

    @property
    def running(self) -> bool:
        return any(s.state == "running" for s in self.services)

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(s.healthy for s in self.services)


def run(ctx: StepContext, *, environment: str) -> EnvironmentStatus:
    """Read the state of `environment`'s Compose project from its engine.

    :param ctx: the step context (configuration, targets).
    :param environment: the environment's name in deploy.toml.
    """
    target = ctx.target(environment)
    return EnvironmentStatus(
        environment=environment,
        docker_host=target.environment.docker_host or "(local engine)",
        compose_project=target.project,
        services=tuple(target.services()),
    )
