"""The Docker side on the real engine: health waits, deadlines, unreachable engines, Compose."""

from __future__ import annotations

import socket
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from deploytools.config import parse_config
from deploytools.engine import Container, Engine
from deploytools.errors import DeadlineExceeded, EnvironmentUnreachable
from deploytools.target import (
    Target,
    connect,
    detect_compose,
    service_state,
    wait_until_healthy,
)

pytestmark = pytest.mark.integration

BASE_IMAGE = "debian:bookworm-slim"
SECOND = 1_000_000_000  # healthcheck intervals are in nanoseconds


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """The docker SDK's own client: the test starts containers with healthchecks, which the
    engine boundary has no call for."""
    engine = connect()  # deploytools' connection works, and is typed
    assert isinstance(engine, Engine)
    engine.close()
    sdk = docker.from_env()
    yield sdk
    sdk.close()


def _run(client: Any, name: str, healthcheck: dict[str, Any], **options: Any) -> Container:
    return Container(
        client.containers.run(
            BASE_IMAGE,
            ["sleep", "300"],
            name=name,
            detach=True,
            healthcheck=healthcheck,
            labels={"deploytools.test": "target"},
            **options,
        )
    )


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"dttarget-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_container_with_a_passing_healthcheck_is_seen_healthy(
    client: Any, container_name: str
) -> None:
    container = _run(
        client,
        container_name,
        {"test": ["CMD", "true"], "interval": SECOND // 2, "retries": 3},
    )
    state = wait_until_healthy(container, timeout_s=30)
    assert state.health == "healthy"
    assert state.state == "running"
    assert state.container == container_name


def test_a_long_healthcheck_interval_is_not_waited_for_the_healthcheck_passing_is(
    client: Any, container_name: str
) -> None:
    """Engine 20.10 runs the first probe one interval after the start (30 s by default, no
    start_interval): the wait runs the container's own healthcheck, in its environment and as
    its user, and is done while the engine has not probed yet; every reader agrees."""
    container = _run(
        client,
        container_name,
        {
            "test": ["CMD-SHELL", 'test "$DT_READY" = yes && test "$(id -u)" = 4321'],
            "interval": 600 * SECOND,
            "retries": 3,
        },
        environment={"DT_READY": "yes"},
        user="4321",
    )
    state = wait_until_healthy(container, timeout_s=60)  # well inside the first interval
    assert state.healthy and state.health == "healthy" and state.health_probed
    container.reload()
    engine_says = container.attrs["State"]["Health"]
    assert engine_says["Status"] == "starting" and not engine_says.get("Log")  # never probed
    assert service_state(container).healthy  # `status`, the deploy's and the resume's reading


def test_container_that_never_gets_healthy_times_out_naming_it_and_its_last_probe(
    client: Any, container_name: str
) -> None:
    container = _run(
        client,
        container_name,
        {
            "test": ["CMD-SHELL", "echo database is not ready; exit 1"],
            "interval": SECOND // 2,
            "retries": 1000,
        },
    )
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        wait_until_healthy(container, timeout_s=4)
    elapsed = time.monotonic() - started
    message = caught.value.message
    assert container_name in message
    assert "not healthy after 4 s" in message
    assert "database is not ready" in message
    assert caught.value.facts["container"] == container_name
    assert elapsed < 15  # the deadline was honoured, not the container's patience


def test_container_that_exits_fails_at_once(client: Any, container_name: str) -> None:
    container = client.containers.run(
        BASE_IMAGE, ["sh", "-c", "exit 3"], name=container_name, detach=True
    )
    container.wait(timeout=30)
    with pytest.raises(DeadlineExceeded) as caught:
        wait_until_healthy(Container(container), timeout_s=60)
    assert "exited (code 3)" in caught.value.message


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word: a hung engine."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    server.close()


def _closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


@pytest.mark.parametrize("scheme", ["tcp", "ssh"])
def test_engine_that_refuses_fails_fast(scheme: str) -> None:
    host = f"{scheme}://deploy@127.0.0.1:{_closed_port()}".replace("tcp://deploy@", "tcp://")
    started = time.monotonic()
    with pytest.raises(EnvironmentUnreachable) as caught:
        connect(host)
    assert time.monotonic() - started < 10
    assert host in caught.value.message


@pytest.mark.parametrize("scheme", ["tcp", "ssh"])
def test_engine_that_hangs_fails_within_ten_seconds(scheme: str, silent_port: int) -> None:
    host = f"{scheme}://deploy@127.0.0.1:{silent_port}".replace("tcp://deploy@", "tcp://")
    started = time.monotonic()
    with pytest.raises(EnvironmentUnreachable) as caught:
        connect(host, timeout=5)  # plus the SDK's 2 s margin
    assert time.monotonic() - started < 10
    assert host in caught.value.message


def test_compose_is_detected_and_runs_for_real(tmp_path: Path, client: Any) -> None:
    cli = detect_compose()
    assert cli.major in (1, 2)
    assert cli.version[0].isdigit()

    project = f"dttarget-{uuid.uuid4().hex[:8]}"
    (tmp_path / "compose.yml").write_text(
        textwrap.dedent(
            f"""
            version: "2.4"
            services:
              app:
                image: {BASE_IMAGE}
                command: ["sleep", "300"]
                stop_signal: SIGKILL
                healthcheck:
                  test: ["CMD", "true"]
                  interval: 1s
            """
        )
    )
    (tmp_path / "deploy.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "t"
            image_repository = "t"
            compose_files = ["compose.yml"]
            app_service = "app"
            database_service = "db"
            migration_command = ["true"]
            [environments.test]
            compose_project = "{project}"
            base_url = "http://127.0.0.1:1"
            """
        )
    )
    config = parse_config((tmp_path / "deploy.toml").read_text(), tmp_path / "deploy.toml")
    target = Target.for_environment(config, "test")
    from deploytools.commands import compose

    try:
        target.compose(lambda c, p, f: compose.up(c, p, f), what="compose up")
        (container,) = target.containers("app")
        state = wait_until_healthy(container, timeout_s=60)
        assert state.service == "app"
        assert [s.service for s in target.services()] == ["app"]
    finally:
        target.compose(lambda c, p, f: compose.down(c, p, f, volumes=True), what="compose down")
    assert target.services() == []
