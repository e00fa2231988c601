"""deploytools/proxy_swarm.py: the HAProxy config in front of a Swarm service, and its
container on the manager."""

from __future__ import annotations

from typing import Any

import pytest

from deploytools import proxy, proxy_swarm
from deploytools.engine.errors import NotFound
from deploytools.proxy_settings import HealthAnswer

SPEC = proxy_swarm.SwarmProxySpec(
    stack="dtswd",
    service="dtswd_app",
    network="dtswd_default",
    image="haproxy:2.8",
    app_port=8080,
    health=HealthAnswer("/health", 200),
    publish=("", 18210),
)


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_the_backend_follows_the_tasks_by_dns_with_health_checks_and_retries() -> None:
    config = lines(proxy_swarm.render("dtswd_app", app_port=8080, health=SPEC.health))
    backend = config[config.index("backend app") :]
    assert backend == [
        "backend app",
        "balance roundrobin",
        "http-request disable-l7-retry unless METH_GET",
        "option httpchk GET /health",
        "http-check expect status 200",
        "default-server check inter 500ms fastinter 500ms downinter 500ms fall 2 rise 2",
        "server-template task 16 tasks.dtswd_app:8080 resolvers docker resolve-prefer ipv4 "
        "init-addr none",
    ]
    for setting in (
        "retries 3",
        "option redispatch 1",
        "retry-on conn-failure empty-response response-timeout",
        "nameserver dns 127.0.0.11:53",
        "hold valid 1s",
        "hold obsolete 0s",
        "bind :80",
    ):
        assert setting in config, setting


def section(text: str, header: str) -> list[str]:
    """The lines of the config's section `header`, up to the blank line that ends it."""
    found = lines(text)
    start = found.index(header)
    return found[start : found.index("", start)]


def test_global_defaults_and_frontend_are_the_compose_proxys_but_for_the_retries() -> None:
    """One `proxy.head` and `proxy.FRONTEND` for both proxies; what differs is the retries."""
    swarm = proxy_swarm.render("app", app_port=8080, health=SPEC.health)
    compose = proxy.render("app", app_port=8080)
    assert section(swarm, "global") == section(compose, "global")
    assert section(swarm, "frontend web") == section(compose, "frontend web")
    common = ["defaults", "mode http", "log global", "option httplog"]
    timeouts = ["timeout client 60s", "timeout server 60s", "timeout http-keep-alive 10s"]
    assert section(compose, "defaults") == [*common, "timeout connect 2s", *timeouts, "retries 2"]
    assert section(swarm, "defaults") == [
        *common,
        "timeout connect 1s",
        *timeouts,
        "retries 3",
        "option redispatch 1",
        "retry-on conn-failure empty-response response-timeout",
    ]


def test_the_health_route_and_status_come_from_the_settings() -> None:
    config = proxy_swarm.render("s", app_port=9000, health=HealthAnswer("/up/ready", 204))
    assert "option httpchk GET /up/ready\n" in config
    assert "http-check expect status 204\n" in config
    assert "tasks.s:9000 " in config


@pytest.mark.parametrize(
    ("service", "path"),
    [("app; reload", "/health"), ("", "/health"), ("app", "/health x"), ("app", "health")],
)
def test_names_that_would_break_the_config_are_refused(service: str, path: str) -> None:
    with pytest.raises(ValueError):
        proxy_swarm.render(service, app_port=8080, health=HealthAnswer(path, 200))


def test_the_container_joins_the_stack_network_and_publishes_the_port() -> None:
    container = proxy_swarm.container_spec(SPEC)
    assert container.name == "dtswd-deploytools-proxy"
    assert container.network == "dtswd_default"
    assert container.publish_fixed == {"80/tcp": ("", 18210)}
    assert container.labels == {proxy_swarm.SWARM_PROXY_LABEL: "dtswd"}
    assert container.restart == "unless-stopped" and container.stop_signal == "SIGUSR1"
    (env,) = container.environment
    assert env.startswith("DEPLOYTOOLS_PROXY_CONF=# Written by deploytools")
    assert "tasks.dtswd_app:8080" in env


class FakeContainer:
    def __init__(self, env: list[str], status: str = "running") -> None:
        self.attrs: dict[str, Any] = {"Config": {"Env": env}}
        self.status = status
        self.removed = False

    def remove(self, *, force: bool = False) -> None:
        self.removed = force


class FakeEngine:
    def __init__(self, found: FakeContainer | None) -> None:
        self.found = found

    def container(self, name: str) -> FakeContainer:
        assert name == SPEC.name
        if self.found is None:
            raise NotFound("no such container")
        return self.found


def test_a_running_proxy_counts_only_with_this_config() -> None:
    same = proxy_swarm.container_spec(SPEC).environment[0]
    assert proxy_swarm.running(FakeEngine(FakeContainer([same])), SPEC) is not None  # type: ignore[arg-type]
    other = FakeContainer(["DEPLOYTOOLS_PROXY_CONF=old"])
    assert proxy_swarm.running(FakeEngine(other), SPEC) is None  # type: ignore[arg-type]
    stopped = FakeContainer([same], status="exited")
    assert proxy_swarm.running(FakeEngine(stopped), SPEC) is None  # type: ignore[arg-type]
    assert proxy_swarm.running(FakeEngine(None), SPEC) is None  # type: ignore[arg-type]


def test_remove_forces_and_a_missing_proxy_is_fine() -> None:
    found = FakeContainer([])
    proxy_swarm.remove(FakeEngine(found), SPEC.name)  # type: ignore[arg-type]
    assert found.removed
    proxy_swarm.remove(FakeEngine(None), SPEC.name)  # type: ignore[arg-type]
