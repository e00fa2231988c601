"""`exec_in_service` on both platforms (one function, `deploytools.platforms.exec_in_running`):
argv runs in the service's first running container; none running is EnvironmentUnreachable
in the platform's words, with nothing run."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from deploytools.config import parse_config
from deploytools.engine.exec import ExecResult
from deploytools.errors import EnvironmentUnreachable
from deploytools.platforms import Platform
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.target import Target
from tests.helpers.deploy_toml import MINIMAL

CONFIG = MINIMAL + textwrap.dedent(
    """
    [environments.prod]
    docker_host = "tcp://10.0.0.1:2375"
    compose_project = "svc-prod"
    base_url = "http://10.0.0.1:8080"
    platform = "swarm"
    """
)


class FakeContainer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ran: list[tuple[list[str], Iterable[bytes] | None, float]] = []

    def exec(
        self, argv: Sequence[str], *, stdin: Iterable[bytes] | None = None, timeout_s: float
    ) -> ExecResult:
        self.ran.append((list(argv), stdin, timeout_s))
        return ExecResult(0, f"ran in {self.name}".encode(), b"")


def platform(kind: str) -> Platform:
    config = parse_config(CONFIG, Path("deploy.toml"))
    if kind == "compose":
        return Target(config=config, environment=config.environment("staging"))
    return SwarmPlatform(config=config, environment=config.environment("prod"))


PLATFORMS = [
    pytest.param("compose", 'the service "db" of environment staging is not running', id="compose"),
    pytest.param("swarm", 'the service "db" of environment prod has no running task', id="swarm"),
]


@pytest.mark.parametrize(("kind", "said"), PLATFORMS)
def test_argv_runs_in_the_first_running_container(
    kind: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = platform(kind)
    first, second = FakeContainer("first"), FakeContainer("second")
    asked: list[str] = []
    monkeypatch.setattr(found, "running", lambda service: asked.append(service) or [first, second])
    result = found.exec_in_service("db", ["psql", "-c", "select 1"], stdin=[b"x"], timeout_s=7)
    assert result.text() == "ran in first"
    assert first.ran == [(["psql", "-c", "select 1"], [b"x"], 7)]
    assert second.ran == [] and asked == ["db"]


@pytest.mark.parametrize(("kind", "said"), PLATFORMS)
def test_none_running_is_unreachable_in_the_platforms_words(
    kind: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = platform(kind)
    monkeypatch.setattr(found, "running", lambda service: [])
    with pytest.raises(EnvironmentUnreachable) as caught:
        found.exec_in_service("db", ["true"])
    error = caught.value
    assert error.message == said
    assert error.untouched == "nothing was done"
    assert error.hint == f"look at `deploytools status --env {found.name}`"
    assert error.facts == {"environment": found.name, "service": "db"}
