"""`deploytools proxy start`: put an environment behind deploytools' own proxy.

The adoption step of a stack whose app publishes its port itself (docs/zero-downtime.md):
the proxy starts beside it on another port and sends every request to the app service by name,
so the app answers on both ports until the traffic has moved to the proxy's. Nothing of the
app is touched. Idempotent: a running proxy is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploytools import proxy
from deploytools.context import StepContext
from deploytools.session import open_environment


@dataclass(frozen=True)
class ProxyStatus:
    environment: str
    container: str
    #: "own": deploytools' container; "compose": the Compose files' proxy service.
    kind: str
    image: str
    #: "ADDRESS:PORT" the proxy publishes ("" = on every interface).
    published: str
    app_port: int
    health: str
    started: bool


def run(ctx: StepContext, *, environment: str) -> ProxyStatus:
    """Start the environment's proxy unless it runs; say where it answers.

    :param ctx: the step context (configuration, targets).
    :param environment: the environment's name in deploy.toml.
    """
    with open_environment(ctx, environment, with_database=True) as session:
        target = session.target
        settings = proxy.settings(target)
        before = proxy.container(target)
        gateway = proxy.ensure_running(
            target, timeout_s=ctx.config.deploy.health_timeout_s, resolved=settings
        )
        assert gateway is not None  # noqa: S101 - ensure_running starts deploytools' own
        gateway.reload()
        ports = (gateway.attrs.get("NetworkSettings", {}).get("Ports") or {}).get("80/tcp") or []
        published = ", ".join(f"{p.get('HostIp', '')}:{p.get('HostPort')}" for p in ports)
        started = before is None
        if started:
            session.progress(f"proxy: {gateway.name} started, publishing {published}")
        return ProxyStatus(
            environment=environment,
            container=gateway.name,
            kind="compose" if settings.compose_service else "own",
            image=str(gateway.attrs.get("Config", {}).get("Image", "")),
            published=published,
            app_port=settings.app_port,
            health=settings.health.describe(),
            started=started,
        )
