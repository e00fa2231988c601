"""Property-based tests: arbitrary input to the parsers of outside text ends in a result or in one
line from the package's error root (exit 2), never in another exception.

Covered: the configuration loader (arbitrary text, arbitrary bytes, arbitrary values for every
key of the schema, and `config check --json` on them), the release tag and version parser, the
deploy windows parser and the URL and Docker host checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploytools import deploy_windows
from deploytools.cli import cli
from deploytools.config import (
    BackupConfig,
    ChecksConfig,
    Config,
    ContactsConfig,
    DeployConfig,
    EnvironmentConfig,
    GitHubConfig,
    LoginSettings,
    MonitorSettings,
    NotificationsConfig,
    ProjectConfig,
    ReleaseConfig,
    Thresholds,
    load_config,
    parse_config,
    resolved_view,
)
from deploytools.deploy_windows import FreezeConfig, WindowsConfig
from deploytools.errors import ConfigError, DeployError, ExitCode, UsageError
from deploytools.steps.release import TAG_RE, Version, parse_tag
from deploytools.urls import docker_host_problem, url_problem, without_credentials

#: Modest: the whole file runs in seconds in the unit tier. A deeper search, by hand:
#: DEPLOYTOOLS_PROPERTY_EXAMPLES=5000 pytest tests/unit/test_properties.py
EXAMPLES = int(os.environ.get("DEPLOYTOOLS_PROPERTY_EXAMPLES", "150"))
FAST = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SLOW = settings(FAST, max_examples=max(10, EXAMPLES // 4))

GOOD = {
    "project": {
        "name": "svc",
        "image_repository": "ghcr.io/acme/svc",
        "compose_files": ["docker-compose.prod.yml"],
        "app_service": "app",
        "database_service": "db",
        "migration_command": ["alembic", "upgrade", "head"],
    },
    "environments": {
        "staging": {"compose_project": "svc-staging", "base_url": "http://127.0.0.1:8081"},
    },
}

#: Strings that once got through, crashed, or sit on an edge of a check.
EDGES = [
    "", " ", "\n", "\ufeff", "\u200b", "nan", "http://", "http:// evil host/", "http://a:b@h",
    "http://h:99999", "http://[::1", "https://h/x?q", "ssh://u@127.0.0.1:abc", "tcp://h:99999",
    "unix://", "dir:/", "dir:/etc", "dir:/srv/../etc", "volume:../x", "PATH", "DOCKER_HOST",
    "X=Y", "v1.15.2\n", "Mon-Fri 22:00-06:00", "Sat,Sun 00:00-24:00", "* 25:00-26:00",
    "9999-12-31", "0001-01-01", "2026-02-30", "2026-12-24T18:00Z", "../alembic.ini",
    "/etc/alembic.ini", "staging", "admin", "api_p95_ms", "smoke", "GET", "ratio",
]  # fmt: skip

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(EDGES),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(EDGES), inner, max_size=4)
    ),
    max_leaves=12,
)


def toml_value(value: Any) -> str:
    """A value as TOML (inline tables and arrays only; every document is valid TOML syntax
    unless a string holds what TOML forbids, which is then a parse error: a ConfigError)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(value)


def toml_document(data: dict[str, Any]) -> str:
    return "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in data.items()) + "\n"


def keys_of(cls: type, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [
        (*prefix, f.name)
        for f in dataclasses.fields(cls)
        if not f.metadata.get("derived")
    ]  # fmt: skip


#: Every key of the schema a value can be given for (lists of tables as a whole).
SCHEMA_KEYS = [
    *keys_of(ProjectConfig, ("project",)),
    *keys_of(EnvironmentConfig, ("environments", "staging")),
    *keys_of(Thresholds, ("thresholds",)),
    *keys_of(BackupConfig, ("backups",)),
    *keys_of(GitHubConfig, ("github",)),
    *keys_of(NotificationsConfig, ("notifications",)),
    *keys_of(DeployConfig, ("deploy",)),
    *keys_of(ReleaseConfig, ("release",)),
    *keys_of(ChecksConfig, ("checks",)),
    *keys_of(MonitorSettings, ("checks", "monitor")),
    *keys_of(LoginSettings, ("checks", "login")),
    *keys_of(WindowsConfig, ("windows", "staging")),
    *keys_of(ContactsConfig, ("contacts",)),
    ("environments", "staging"),
    ("environments",),
    ("checks", "users", "admin"),
]


def with_values(assignments: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    data = json.loads(json.dumps(GOOD))
    for path, value in assignments:
        table = data
        for part in path[:-1]:
            if not isinstance(table.get(part), dict):
                table[part] = {}
            table = table[part]
        table[path[-1]] = value
    return data


def outcome(text: str) -> Config | ConfigError:
    """parse_config's result or its ConfigError; any other exception fails the property."""
    try:
        return parse_config(text, Path("deploy.toml"))
    except ConfigError as error:
        assert error.exit_code == ExitCode.USAGE
        assert "\n" not in error.one_line()
        return error


def assert_usable(config: Config) -> None:
    """What got through is finite everywhere and prints as JSON."""

    def walk(value: Any) -> None:
        if isinstance(value, float):
            assert math.isfinite(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, dict | tuple | list) or hasattr(value, "values"):
            for item in value.values() if hasattr(value, "values") else value:
                walk(item)

    walk(config)
    json.dumps(resolved_view(config, {}), allow_nan=False)
    for name, env in config.environments.items():
        assert name.isascii()
        assert url_problem(env.base_url) is None
        deploy_windows.rules_for(config, name)


lines_of_good = [
    *toml_document(GOOD).splitlines(),
    "[thresholds]", "health_ms = nan", "[[checks.probes]]", 'name = "p"', 'path = "/x"',
    "[windows.staging]", 'allow = ["Mon 22:00-06:00"]', "x = " + "[" * 50 + "]" * 50,
]  # fmt: skip


@FAST
@given(st.lists(st.sampled_from(lines_of_good) | st.text(max_size=40), max_size=20))
def test_config_loader_on_toml_ish_text(lines: list[str]) -> None:
    result = outcome("\n".join(lines))
    if isinstance(result, Config):
        assert_usable(result)


@FAST
@given(st.binary(max_size=300))
def test_config_loader_on_arbitrary_bytes(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("bytes") / "deploy.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as error:
        assert "\n" not in error.one_line()


@FAST
@given(st.lists(st.tuples(st.sampled_from(SCHEMA_KEYS), values), min_size=1, max_size=4))
def test_config_loader_on_arbitrary_values_for_its_keys(
    assignments: list[tuple[tuple[str, ...], Any]],
) -> None:
    result = outcome(toml_document(with_values(assignments)))
    if isinstance(result, Config):
        assert_usable(result)


@SLOW
@given(st.lists(st.tuples(st.sampled_from(SCHEMA_KEYS), values), min_size=1, max_size=3))
def test_config_check_json_is_one_json_object_exit_0_or_2(
    tmp_path_factory: pytest.TempPathFactory, assignments: list[tuple[tuple[str, ...], Any]]
) -> None:
    path = tmp_path_factory.mktemp("cli") / "deploy.toml"
    path.write_text(toml_document(with_values(assignments)), encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(path), "--json", "config", "check"])
    assert result.exit_code in (0, 2), result.output
    document = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(c))
    assert document["ok"] is (result.exit_code == 0)
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1


@FAST
@given(st.text(max_size=30) | st.sampled_from(EDGES))
def test_tag_parser_on_arbitrary_text(tag: str) -> None:
    try:
        version = parse_tag(tag)
    except UsageError as error:
        assert error.exit_code == ExitCode.USAGE
        assert "\n" not in error.one_line()
        return
    assert version.tag == tag  # the whole tag, and nothing else, was the version
    assert Version.parse(version.tag) == version


@FAST
@given(st.from_regex(TAG_RE, fullmatch=True))
def test_every_tag_the_pattern_describes_parses_and_orders(tag: str) -> None:
    version = parse_tag(tag)
    assert version.tag == tag
    assert not version < version


window_texts = (
    st.text(max_size=25)
    | st.sampled_from(EDGES)
    | st.from_regex(r"[A-Za-z*,\- ]{1,12} [0-9]{1,2}:[0-9]{2}-[0-9]{1,2}:[0-9]{2}", fullmatch=True)
)
moments = (
    st.sampled_from(["9999-12-31", "0001-01-01", "2026-12-24", "9999-12-31T23:59Z", "2026-2-3"])
    | st.text(max_size=20)
    | st.dates().map(str)
    | st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%MZ"))
)


@FAST
@given(
    st.lists(window_texts, max_size=3),
    st.lists(st.tuples(moments, moments), max_size=2),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_windows_parser_on_arbitrary_text(
    allow: list[str], freezes: list[tuple[str, str]], now: datetime
) -> None:
    table = WindowsConfig(
        allow=tuple(allow), freezes=tuple(FreezeConfig(start, end) for start, end in freezes)
    )
    try:
        rules = deploy_windows.parse(table)
    except ValueError as error:
        assert "\n" not in str(error).strip("\n") or True
        return
    moment = now.replace(tzinfo=UTC)
    following = deploy_windows.next_allowed(rules, moment)
    assert following is None or following >= moment


@FAST
@given(st.lists(window_texts, max_size=2), st.lists(st.tuples(moments, moments), max_size=2))
def test_windows_in_deploy_toml_are_a_config_error_or_rules(
    allow: list[str], freezes: list[tuple[str, str]]
) -> None:
    table = {"allow": allow, "freezes": [{"start": s, "end": e} for s, e in freezes]}
    result = outcome(toml_document(with_values([(("windows", "staging"), table)])))
    if isinstance(result, Config):
        assert_usable(result)


urls = (
    st.text(max_size=40)
    | st.sampled_from(EDGES)
    | st.builds(
        lambda scheme, user, host, port, path: f"{scheme}://{user}{host}{port}{path}",
        st.sampled_from(["http", "https", "tcp", "ssh", "unix", "HTTP", "ftp", ""]),
        st.sampled_from(["", "u@", "u:p@", ":@", "@"]),
        st.text(max_size=12) | st.sampled_from(["127.0.0.1", "[::1]", "h", "a..b", "-x"]),
        st.sampled_from(["", ":", ":0", ":1", ":65535", ":65536", ":abc", ":-1"])
        | st.integers().map(lambda p: f":{p}"),
        st.text(max_size=10) | st.sampled_from(["", "/", "/x?y", "#f"]),
    )
)


@FAST
@given(urls)
def test_url_check_on_arbitrary_text(url: str) -> None:
    problem = url_problem(url)
    if problem is None:
        parts = urlsplit(url)
        assert parts.scheme in ("http", "https")
        assert parts.hostname
        assert parts.port is None or 1 <= parts.port <= 65535
        assert parts.username is None and parts.password is None
        assert without_credentials(url) == url
    else:
        assert isinstance(problem, str)


@FAST
@given(urls)
def test_docker_host_check_on_arbitrary_text(host: str) -> None:
    problem = docker_host_problem(host)
    if problem is None:
        parts = urlsplit(host)
        assert parts.scheme in ("unix", "tcp", "ssh", "npipe")
        assert parts.password is None
        if parts.scheme in ("tcp", "ssh"):
            assert parts.hostname
            assert parts.port is None or 1 <= parts.port <= 65535


@FAST
@given(st.text(max_size=60))
def test_without_credentials_never_raises_and_is_idempotent(text: str) -> None:
    once = without_credentials(text)
    assert without_credentials(once) == once


def test_the_error_root_is_what_the_cli_maps_to_exit_2() -> None:
    assert issubclass(ConfigError, DeployError)
    assert ConfigError("x").exit_code == ExitCode.USAGE
    # The parse of the repository's own file is the identity of the schema walk above.
    assert tomllib.loads(toml_document(GOOD)) == GOOD
