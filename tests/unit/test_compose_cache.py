"""Compose detection remembered across processes: the cache file under the user's cache
directory, keyed by the programs and plugin files, with a faked probe runner."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from deploytools.commands import compose as compose_cmd
from deploytools.engine import compose_cache
from deploytools.engine.compose import find_compose
from deploytools.engine.process import ProcessResult
from deploytools.errors import EnvironmentUnreachable


class FakeRunner:
    """Answers `version --short` for the candidates named in `answers`, counts the probes."""

    def __init__(self, answers: Mapping[tuple[str, ...], str]) -> None:
        self.answers = dict(answers)
        self.calls: list[tuple[str, ...]] = []

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float,
        cwd: str | None = None,
    ) -> ProcessResult:
        self.calls.append(tuple(argv))
        prefix = tuple(argv[:-2])
        if prefix in self.answers:
            return ProcessResult(tuple(argv), 0, self.answers[prefix] + "\n", "")
        return ProcessResult(tuple(argv), 1, "", "unknown command")


def _program(directory: Path, name: str, body: str = "#!/bin/sh\n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / name
    program.write_text(body)
    program.chmod(0o755)
    return program


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH holds only a fake docker and docker-compose, with its own
    home, docker config and cache directory."""
    _program(tmp_path / "bin", "docker")
    _program(tmp_path / "bin", "docker-compose")
    return {
        "PATH": str(tmp_path / "bin"),
        "HOME": str(tmp_path / "home"),
        "DOCKER_CONFIG": str(tmp_path / "dockercfg"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


V1 = {compose_cmd.COMPOSE_V1: "1.29.2"}


def test_a_second_detection_reads_the_cache_file_and_runs_no_probe(
    machine: dict[str, str], tmp_path: Path
) -> None:
    first = FakeRunner(V1)
    cli = find_compose(runner=first, environ=machine)
    assert cli == compose_cmd.ComposeCli(prefix=compose_cmd.COMPOSE_V1, version="1.29.2")
    assert first.calls  # v2 asked, then v1
    assert list((tmp_path / "cache" / "deploytools").glob("compose-*.json"))

    second = FakeRunner({})
    assert find_compose(runner=second, environ=machine) == cli
    assert second.calls == []


def test_a_changed_program_is_probed_again(machine: dict[str, str], tmp_path: Path) -> None:
    find_compose(runner=FakeRunner(V1), environ=machine)
    program = tmp_path / "bin" / "docker-compose"
    program.write_text("#!/bin/sh\n# upgraded\n")
    stat = program.stat()
    os.utime(program, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    again = FakeRunner({compose_cmd.COMPOSE_V1: "1.30.0"})
    assert find_compose(runner=again, environ=machine).version == "1.30.0"
    assert again.calls


def test_an_installed_plugin_is_probed_again(machine: dict[str, str], tmp_path: Path) -> None:
    assert find_compose(runner=FakeRunner(V1), environ=machine).major == 1
    _program(tmp_path / "dockercfg" / "cli-plugins", "docker-compose")

    again = FakeRunner({compose_cmd.COMPOSE_V2: "2.29.1", **V1})
    cli = find_compose(runner=again, environ=machine)
    assert cli.prefix == compose_cmd.COMPOSE_V2
    assert cli.version == "2.29.1"


def test_another_path_or_engine_is_another_key(machine: dict[str, str], tmp_path: Path) -> None:
    find_compose(runner=FakeRunner(V1), environ=machine)
    _program(tmp_path / "other", "docker-compose")
    elsewhere = {**machine, "PATH": str(tmp_path / "other")}
    probed = FakeRunner({compose_cmd.COMPOSE_V1: "1.25.0"})
    assert find_compose(runner=probed, environ=elsewhere).version == "1.25.0"

    remote = FakeRunner(V1)
    find_compose("ssh://deploy@example.invalid", runner=remote, environ=machine)
    assert remote.calls


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"key": {}, "prefix": ["docker-compose"], "version": "1.29.2"}',
    ],
)
def test_a_malformed_or_foreign_cache_file_is_ignored_and_replaced(
    machine: dict[str, str], tmp_path: Path, body: str
) -> None:
    find_compose(runner=FakeRunner(V1), environ=machine)
    (cached,) = (tmp_path / "cache" / "deploytools").glob("compose-*.json")
    cached.write_text(body)

    probed = FakeRunner(V1)
    assert find_compose(runner=probed, environ=machine).version == "1.29.2"
    assert probed.calls
    assert json.loads(cached.read_text())["version"] == "1.29.2"


@pytest.mark.parametrize(
    ("prefix", "version"),
    [
        (["sh", "-c", "touch /tmp/x;"], "1.29.2"),
        (["docker-compose"], ""),
        (["docker-compose"], "x\n" * 40),
    ],
)
def test_a_forged_answer_is_not_trusted(
    machine: dict[str, str], tmp_path: Path, prefix: list[str], version: str
) -> None:
    find_compose(runner=FakeRunner(V1), environ=machine)
    (cached,) = (tmp_path / "cache" / "deploytools").glob("compose-*.json")
    data = json.loads(cached.read_text())
    cached.write_text(json.dumps({**data, "prefix": prefix, "version": version}))

    probed = FakeRunner(V1)
    assert find_compose(runner=probed, environ=machine).prefix == compose_cmd.COMPOSE_V1
    assert probed.calls


def test_an_unwritable_cache_directory_only_costs_the_probe(
    machine: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "blocked").write_text("a file where the cache directory would be")
    environ = {**machine, "XDG_CACHE_HOME": str(tmp_path / "blocked")}
    for _ in range(2):
        probed = FakeRunner(V1)
        assert find_compose(runner=probed, environ=environ).version == "1.29.2"
        assert probed.calls


def test_a_failed_detection_is_not_remembered(machine: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(EnvironmentUnreachable, match="Docker Compose is not installed"):
        find_compose(runner=FakeRunner({}), environ=machine)
    assert not list((tmp_path / "cache").glob("**/compose-*.json"))
    assert find_compose(runner=FakeRunner(V1), environ=machine).version == "1.29.2"


def test_the_cache_directory_follows_xdg_then_home(tmp_path: Path) -> None:
    assert compose_cache.cache_dir({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/deploytools")
    # a relative XDG_CACHE_HOME is invalid by the spec and ignored
    assert compose_cache.cache_dir({"XDG_CACHE_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.cache/deploytools"
    )
    assert compose_cache.cache_dir({}) is None


def test_without_a_cache_directory_every_detection_probes(machine: dict[str, str]) -> None:
    environ = {"PATH": machine["PATH"], "DOCKER_CONFIG": machine["DOCKER_CONFIG"]}
    for _ in range(2):
        probed = FakeRunner(V1)
        assert find_compose(runner=probed, environ=environ).major == 1
        assert probed.calls
