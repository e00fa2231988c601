"""The release image on a Swarm manager: pulled by its digest from the registry when the
manager lacks it (the nodes pull it themselves), never by a tag; the engine's pull of a
`repository:tag@sha256:...` reference asks for the digest. The real pull from a registry runs
in tests/swarm/test_swarm_pipeline.py."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.config import parse_config
from deploytools.engine.client import Engine
from deploytools.engine.errors import EngineError
from deploytools.errors import EnvironmentUnreachable
from deploytools.platforms.swarm import SwarmPlatform

CONFIG = textwrap.dedent(
    """
    [project]
    name = "svc"
    image_repository = "registry.example:5000/acme/svc"
    compose_files = ["docker-compose.yml"]
    app_service = "app"
    database_service = "db"
    migration_command = ["alembic", "upgrade", "head"]

    [environments.prod]
    docker_host = "tcp://10.0.0.1:2375"
    compose_project = "svc"
    base_url = "http://10.0.0.1:8080"
    platform = "swarm"
    """
)
DIGEST = "sha256:" + "ab" * 32
PINNED = f"registry.example:5000/acme/svc:1.2.3@{DIGEST}"


class FakeApi:
    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.timeout = 60
        self.chunks = chunks
        self.pulls: list[tuple[str, str, float]] = []

    def pull(self, repository: str, *, tag: str, stream: bool, decode: bool) -> Iterator[Any]:
        self.pulls.append((repository, tag, self.timeout))
        yield from self.chunks


class FakeManager:
    """The manager's engine: which images it has, and the pulls it was asked for."""

    def __init__(self, *, has: bool, chunks: list[dict[str, Any]] | None = None) -> None:
        self.has = has
        self.api = FakeApi(chunks or [{"status": f"Digest: {DIGEST}"}])
        self.engine = Engine(SimpleNamespace(api=self.api))

    def find_image(self, ref: str) -> Any:
        return object() if self.has else None

    def pull(self, ref: str, *, read_timeout_s: float) -> Iterator[dict[str, Any]]:
        return self.engine.pull(ref, read_timeout_s=read_timeout_s)


def platform(tmp_path: Path, manager: FakeManager) -> SwarmPlatform:
    config = parse_config(CONFIG, tmp_path / "deploy.toml")
    made = SwarmPlatform(config=config, environment=config.environment("prod"))
    made._manager = manager  # type: ignore[assignment]  # the fake stands in for the engine
    return made


def test_a_release_pinned_by_digest_is_pulled_by_its_digest(tmp_path: Path) -> None:
    manager = FakeManager(has=False)
    said: list[str] = []

    platform(tmp_path, manager).ensure_image(PINNED, progress=said.append)

    assert manager.api.pulls == [("registry.example:5000/acme/svc", DIGEST, 600.0)]
    assert manager.api.timeout == 60  # the client's own timeout is back
    assert said == [f"[prod] pulling {PINNED} from registry.example:5000 on the manager"]


@pytest.mark.parametrize(
    ("ref", "has"),
    [
        (PINNED, True),  # the manager has it already
        ("registry.example:5000/acme/svc:1.2.3", False),  # a tag: deploytools pulls no tags
        (DIGEST, False),  # an image ID: only an engine that built it has it
    ],
)
def test_nothing_is_pulled_unless_a_pinned_release_is_missing(
    tmp_path: Path, ref: str, has: bool
) -> None:
    manager = FakeManager(has=has)
    platform(tmp_path, manager).ensure_image(ref)
    assert manager.api.pulls == []


def test_a_pull_the_registry_refuses_says_what_and_what_was_left(tmp_path: Path) -> None:
    manager = FakeManager(has=False, chunks=[{"error": "manifest unknown"}])

    with pytest.raises(EnvironmentUnreachable) as raised:
        platform(tmp_path, manager).ensure_image(PINNED)

    assert raised.value.message == (
        f"the manager of environment prod cannot pull {PINNED}: manifest unknown"
    )
    assert raised.value.untouched == "nothing was done: prod runs what it ran"
    assert "image build --push" in (raised.value.hint or "")


def test_an_unreachable_registry_is_an_unreachable_environment(tmp_path: Path) -> None:
    manager = FakeManager(has=False)

    def broken(ref: str, *, read_timeout_s: float) -> Iterator[dict[str, Any]]:
        raise EngineError("connection refused")

    manager.pull = broken  # type: ignore[method-assign]
    with pytest.raises(EnvironmentUnreachable, match="connection refused"):
        platform(tmp_path, manager).ensure_image(PINNED)


@pytest.mark.parametrize(
    ("ref", "repository", "tag"),
    [
        (f"localhost:5000/svc@{DIGEST}", "localhost:5000/svc", DIGEST),
        (f"svc:1.2.3@{DIGEST}", "svc", DIGEST),
        ("localhost:5000/svc:1.2.3", "localhost:5000/svc", "1.2.3"),
        ("localhost:5000/svc", "localhost:5000/svc", "latest"),
    ],
)
def test_the_engine_pulls_a_digest_when_the_reference_has_one(
    ref: str, repository: str, tag: str
) -> None:
    api = FakeApi([])
    list(Engine(SimpleNamespace(api=api)).pull(ref, read_timeout_s=30))
    assert api.pulls == [(repository, tag, 30)]
