"""deploytools' proxy in front of a Swarm service: HAProxy on a manager, following the tasks.

Swarm's own routing (the ingress mesh, a service's virtual IP) sends a request to a task that
is being stopped, or to none while the mesh catches up: the dropped requests users report
during `docker service update`. deploytools' proxy instead:

- is one container on the manager's engine, attached to the stack's attachable overlay and
  publishing the environment's port there (the app service publishes none);
- follows the app's tasks through Docker's DNS: `tasks.<service>` answers with every running
  task's address (`server-template`, re-resolved every second; a task gone from the answer
  leaves the backend);
- health-checks each task itself, fast (`HEALTH_INTERVAL_MS`), so a task that stops answering
  is out within `HEALTH_FALL` checks, before the DNS says so;
- retries a request whose connection failed, or whose server closed it without an answer,
  on another task (`retry-on`, `option redispatch 1`): the window between a task's stop and
  its leaving the backend then costs a retry, not a failed request. Only idempotent requests
  are retried past a connection failure (`disable-l7-retry`): a POST that reached a dying
  task may have run there.

A task Swarm stops gets SIGTERM; a graceful server (gunicorn) stops accepting and finishes the
requests it has: the proxy's next connection to it fails and is retried elsewhere. The figures
are in benchmarks/RESULTS.md (benchmarks/swarm_bench.py).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from deploytools.engine.client import Container, Engine, OneOff
from deploytools.engine.errors import EngineError, ImageNotFound, NotFound
from deploytools.errors import EnvironmentUnreachable, ExternalCommandFailed
from deploytools.proxy import (
    BACKEND,
    FRONTEND,
    PROXY_COMMAND,
    PROXY_HEALTHCHECK,
    RESOLVER,
    check_service_name,
    head,
)
from deploytools.proxy_settings import HealthAnswer
from deploytools.target import wait_until_healthy

#: The server slots of the backend: the most tasks the proxy follows (replicas plus those a
#: start-first update starts beside them).
SLOTS = 16
#: The proxy's own health checks of each task: every 500 ms, out after 2 failures (1 s), back
#: after 2 passes. Faster than Docker's healthcheck (2 s here) and than its DNS.
HEALTH_INTERVAL_MS = 500
HEALTH_FALL = 2
HEALTH_RISE = 2
#: A try on another task after a failed connection or an empty answer; 3 tries in all.
RETRIES = 3
#: The label naming the proxy container; the stack it fronts is its value.
SWARM_PROXY_LABEL = "deploytools.swarm-proxy"


@dataclass(frozen=True)
class SwarmProxySpec:
    """What the proxy of one stack is: its name, image, network and published port."""

    stack: str
    #: The app's Swarm service ("<stack>_app"), whose tasks `tasks.<service>` resolves to.
    service: str
    network: str
    image: str
    app_port: int
    health: HealthAnswer
    #: Where the proxy publishes on the manager: (host address, "" for all; port).
    publish: tuple[str, int]

    @property
    def name(self) -> str:
        return f"{self.stack}-deploytools-proxy"


def render(service: str, *, app_port: int, health: HealthAnswer, slots: int = SLOTS) -> str:
    """The HAProxy config of the proxy in front of the Swarm service `service`.

    Its `global`, `defaults` and frontend are the Compose proxy's (`proxy.head`,
    `proxy.FRONTEND`) but for the retries: a failed connect (a stopped task's address) is
    retried on another task (`option redispatch 1`), and so is a request answered with
    nothing or too late (`retry-on`), RETRIES times at most; the connect timeout is 1 s, not
    the Compose proxy's 2 s, so a try that meets a stopped task costs a second at most before
    the next goes elsewhere (the Compose proxy retries on the same server: it has no other).
    Its resolvers hold every answer, failed ones too, a second (the DNS answer is the
    backend's membership), and its backend is a `server-template` over `tasks.<service>`."""
    check_service_name(service)
    if not re.fullmatch(r"/[A-Za-z0-9_.~/%-]*", health.path):
        raise ValueError(f"not a health path HAProxy can send as it is: {health.path!r}")
    retry_policy = ("option redispatch 1", "retry-on conn-failure empty-response response-timeout")
    return f"""\
# Written by deploytools (deploytools/proxy_swarm.py): in front of the Swarm service
# {service}, following its tasks through Docker's DNS (tasks.{service}).
{head(connect_timeout_s=1, retries=RETRIES, retry_policy=retry_policy)}
resolvers docker
    nameserver dns {RESOLVER}
    hold valid 1s
    hold obsolete 0s
    hold nx 1s
    hold other 1s
    hold refused 1s
    hold timeout 1s
    timeout resolve 1s
    timeout retry 1s
    resolve_retries 3
    accepted_payload_size 8192

{FRONTEND}
backend {BACKEND}
    balance roundrobin
    http-request disable-l7-retry unless METH_GET
    option httpchk GET {health.path}
    http-check expect status {health.status}
    default-server check inter {HEALTH_INTERVAL_MS}ms fastinter {HEALTH_INTERVAL_MS}ms \
downinter {HEALTH_INTERVAL_MS}ms fall {HEALTH_FALL} rise {HEALTH_RISE}
    server-template task {slots} tasks.{service}:{app_port} resolvers docker \
resolve-prefer ipv4 init-addr none
"""


def container_spec(spec: SwarmProxySpec) -> OneOff:
    """The proxy's container on the manager's engine."""
    host, port = spec.publish
    return OneOff(
        image=spec.image,
        name=spec.name,
        command=PROXY_COMMAND,
        environment=[
            "DEPLOYTOOLS_PROXY_CONF="
            + render(spec.service, app_port=spec.app_port, health=spec.health)
        ],
        labels={SWARM_PROXY_LABEL: spec.stack},
        network=spec.network,
        publish_fixed={"80/tcp": (host, port)},
        restart="unless-stopped",
        # A soft stop: sessions in flight finish.
        stop_signal="SIGUSR1",
        healthcheck={
            "test": PROXY_HEALTHCHECK,
            "interval_s": 2,
            "timeout_s": 3,
            "retries": 3,
            "start_period_s": 5,
        },
    )


def running(manager: Engine, spec: SwarmProxySpec) -> Container | None:
    """The stack's proxy when it runs with this spec's config; None otherwise."""
    try:
        found = manager.container(spec.name)
    except NotFound:
        return None
    wanted = container_spec(spec).environment[0]
    if found.status != "running" or wanted not in _environment(found):
        return None
    return found


def _environment(found: Container) -> list[str]:
    return list((found.attrs.get("Config") or {}).get("Env") or [])


def ensure_running(manager: Engine, spec: SwarmProxySpec, *, timeout_s: float) -> Container:
    """The stack's proxy, started on `manager` (or replaced, when it runs another config or
    is stopped) and healthy."""
    found = running(manager, spec)
    if found is not None:
        return found
    remove(manager, spec.name)
    try:
        started = manager.run(container_spec(spec))
    except ImageNotFound:
        raise EnvironmentUnreachable(
            f"the proxy's image {spec.image} is not on the manager's engine",
            untouched="no proxy was started",
            hint="load it there, or name another in [proxy] image (or $PROXY_IMAGE)",
        ) from None
    except EngineError as error:
        host, port = spec.publish
        raise ExternalCommandFailed(
            f"the proxy of stack {spec.stack} did not start on the manager "
            f"(image {spec.image}, port {host + ':' if host else ''}{port}): {error}",
            untouched="no proxy was started",
            hint="is the port taken, and is the stack's network attachable?",
        ) from error
    wait_until_healthy(started, timeout_s=timeout_s)
    return started


def remove(manager: Engine, name: str) -> None:
    """Remove the proxy container `name` (gone already is fine)."""
    with contextlib.suppress(NotFound):
        manager.container(name).remove(force=True)
