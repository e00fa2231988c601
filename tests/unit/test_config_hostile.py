"""deploy.toml as a hostile or careless user writes it: every case is one clear line and exit 2.

Each case here was, before it was refused, either a silent pass (a check turned off by `nan`), a
crash (exit 70) or a risk on a real host (a backup store at "/"). The message names the key and
what is wrong; a secret in the file is never repeated in it.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.config import (
    MAX_CONFIG_BYTES,
    NUMBER_RANGES,
    Config,
    load_config,
    parse_config,
)
from deploytools.errors import ConfigError, ExitCode
from tests.helpers.deploy_toml import MINIMAL

GOOD = MINIMAL + textwrap.dedent(
    """
    [environments.production]
    docker_host = "ssh://deploy@prod.example.com"
    compose_project = "svc-production"
    base_url = "https://svc.example.com"
    requires_approval = true
    secrets = ["POSTGRES_PASSWORD"]
    """
)


def replace(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


def variables(table: str) -> str:
    return replace("requires_approval = true", f"requires_approval = true\nvariables = {table}")


def staging_url(url: str) -> str:
    return replace('base_url = "http://127.0.0.1:8081"', f'base_url = "{url}"')


def docker_host(host: str) -> str:
    return replace('docker_host = "ssh://deploy@prod.example.com"', f'docker_host = "{host}"')


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("deploy.toml"))
    error = caught.value
    assert error.exit_code == ExitCode.USAGE
    assert "\n" not in error.one_line()
    return error


NUMBERS = [
    pytest.param("[thresholds]\nhealth_ms = nan", '"thresholds.health_ms"', id="threshold-nan"),
    pytest.param("[thresholds]\nhealth_ms = inf", '"thresholds.health_ms"', id="threshold-inf"),
    pytest.param(
        "[thresholds]\napi_p95_ms = -inf", '"thresholds.api_p95_ms"', id="threshold-minus-inf"
    ),
    pytest.param(
        "[thresholds]\nerror_rate_percent = 150.0",
        '"thresholds.error_rate_percent" must be greater than 0 and at most 100',
        id="percent-over-100",
    ),
    pytest.param("[github]\nci_wait_s = nan", '"github.ci_wait_s"', id="ci-wait-nan"),
    pytest.param("[github]\nci_wait_s = 1e300", '"github.ci_wait_s"', id="ci-wait-huge"),
    pytest.param(
        "[deploy]\nhealth_timeout_s = nan", '"deploy.health_timeout_s"', id="health-timeout-nan"
    ),
    pytest.param(
        "[deploy]\nmigration_timeout_s = inf",
        '"deploy.migration_timeout_s"',
        id="migration-timeout-inf",
    ),
    pytest.param(
        "[deploy]\nlock_ttl_s = 9223372036854775807", '"deploy.lock_ttl_s"', id="lock-ttl-huge"
    ),
    pytest.param("[checks]\ntimeout_s = nan", '"checks.timeout_s"', id="checks-timeout-nan"),
    pytest.param(
        "[checks.monitor]\ninterval_s = nan", '"checks.monitor.interval_s"', id="monitor-nan"
    ),
    pytest.param(
        "[checks.monitor]\nbaseline_tolerance = inf",
        '"checks.monitor.baseline_tolerance"',
        id="monitor-tolerance-inf",
    ),
    pytest.param(
        "[notifications]\ntimeout_s = nan", '"notifications.timeout_s"', id="notify-timeout-nan"
    ),
    pytest.param(
        '[[checks.latency]]\npath = "/x"\nrate_per_s = nan',
        '"checks.latency[0].rate_per_s"',
        id="latency-rate-nan",
    ),
    pytest.param(
        '[[checks.probes]]\nname = "p"\npath = "/x"\nexpect_status = 99999',
        '"checks.probes[0].expect_status"',
        id="probe-status-out-of-range",
    ),
    pytest.param(
        '[[checks.probes]]\nname = "p"\npath = "/x"\nexpect_json = { "a" = nan }',
        '"checks.probes[0].expect_json.a"',
        id="probe-json-nan",
    ),
]


@pytest.mark.parametrize(("extra", "names"), NUMBERS)
def test_every_number_is_finite_and_in_range(extra: str, names: str) -> None:
    error = refused(GOOD + "\n" + extra + "\n")
    assert names in error.message


def test_every_number_of_the_schema_has_a_documented_range() -> None:
    """A new number in deploy.toml must come with its range: nothing unbounded slips in."""
    import dataclasses
    import typing

    def numbers(cls: type, seen: set[type]) -> set[tuple[str, str]]:
        if cls in seen:
            return set()
        seen.add(cls)
        found: set[tuple[str, str]] = set()
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if tp in (int, float):
                found.add((cls.__name__, f.name))
            for arg in (tp, *typing.get_args(tp)):
                for inner in (arg, *typing.get_args(arg)):
                    if dataclasses.is_dataclass(inner) and isinstance(inner, type):
                        found |= numbers(inner, seen)
        return found

    ranged = {(cls.__name__, name) for cls, table in NUMBER_RANGES.items() for name in table}
    assert numbers(Config, set()) - ranged == set()


URLS = [
    pytest.param(staging_url("http://"), "has no host", id="no-host"),
    pytest.param(staging_url("http:// evil host/"), "spaces", id="spaces"),
    pytest.param(staging_url("http://127.0.0.1:99999"), "port", id="port-too-big"),
    pytest.param(staging_url("http://127.0.0.1:abc"), "port", id="port-not-a-number"),
    pytest.param(staging_url("http://127.0.0.1:0"), "port", id="port-zero"),
    pytest.param(staging_url("http://[::1"), "not a URL", id="broken-ipv6"),
    pytest.param(staging_url("http://host/?q=1"), "query", id="query"),
    pytest.param(staging_url("http://admin:S3cretPass@host"), "credentials", id="credentials"),
    pytest.param(staging_url("http://admin@host"), "credentials", id="user-only"),
    pytest.param(
        GOOD + '\n[github]\napi_url = "https://x:y@api.github.com"\n',
        '"github.api_url"',
        id="api-url-credentials",
    ),
    pytest.param(
        GOOD + '\n[backups]\ns3_endpoint_url = "http://:9000"\n',
        '"backups.s3_endpoint_url"',
        id="s3-endpoint-no-host",
    ),
    pytest.param(docker_host("ssh://u@127.0.0.1:abc"), "port", id="docker-host-ssh-port"),
    pytest.param(docker_host("tcp://127.0.0.1:99999"), "port", id="docker-host-tcp-port"),
    pytest.param(docker_host("tcp://"), "has no host", id="docker-host-no-host"),
    pytest.param(docker_host("ssh://u:pw@host"), "credentials", id="docker-host-password"),
    pytest.param(docker_host("unix://"), "socket", id="docker-host-unix-no-path"),
    pytest.param(docker_host("ssh://host\\nx"), "spaces", id="docker-host-newline"),
]


@pytest.mark.parametrize(("text", "expected"), URLS)
def test_every_url_is_parsed_and_checked(text: str, expected: str) -> None:
    error = refused(text)
    assert expected in error.message
    assert "S3cretPass" not in error.one_line()
    assert "u:pw" not in error.one_line()


def test_good_urls_and_docker_hosts_pass() -> None:
    for url in ("http://127.0.0.1:8081", "https://svc.example.com/api", "http://[::1]:8080/"):
        parse_config(staging_url(url), Path("deploy.toml"))
    for host in ("ssh://deploy@prod.example.com:2222", "tcp://10.0.0.5:2376", "unix:///run/d.sock"):
        parse_config(docker_host(host), Path("deploy.toml"))


CONFINED = [
    pytest.param(GOOD + '\n[backups]\nstore = "dir:/"\n', "backups.store", id="store-root"),
    pytest.param(GOOD + '\n[backups]\nstore = "dir:/etc"\n', "backups.store", id="store-etc"),
    pytest.param(
        GOOD + '\n[backups]\nstore = "dir:/usr/lib/x"\n', "backups.store", id="store-under-usr"
    ),
    pytest.param(
        GOOD + '\n[backups]\nstore = "dir:/srv/../etc"\n', "backups.store", id="store-dotdot"
    ),
    pytest.param(GOOD + '\n[backups]\nstore = "volume:../x"\n', "backups.store", id="volume-dots"),
    pytest.param(GOOD + '\n[backups]\ncopy_to = "dir:/etc"\n', "backups.copy_to", id="copy-to-etc"),
    pytest.param(
        variables('{ "" = "x" }'),
        "variables",
        id="variable-empty-name",
    ),
    pytest.param(
        variables('{ "X=Y" = "x" }'),
        "variables",
        id="variable-with-equals",
    ),
    pytest.param(
        variables('{ PATH = "/x" }'),
        "PATH",
        id="variable-path",
    ),
    pytest.param(
        variables('{ DOCKER_HOST = "x" }'),
        "DOCKER_HOST",
        id="variable-docker-host",
    ),
    pytest.param(
        replace('secrets = ["POSTGRES_PASSWORD"]', 'secrets = ["LD_PRELOAD"]'),
        "LD_PRELOAD",
        id="secret-ld-preload",
    ),
    pytest.param(
        replace('secrets = ["POSTGRES_PASSWORD"]', 'secrets = ["POSTGRES_PASSWORD\\n"]'),
        "secrets",
        id="secret-trailing-newline",
    ),
    pytest.param(
        replace("[environments.production]", '[environments."pr\u043ed"]'),
        "environment name",
        id="env-name-homoglyph",
    ),
    pytest.param(
        replace("[environments.production]", '[environments."prod uction"]'),
        "environment name",
        id="env-name-space",
    ),
    pytest.param(
        GOOD + '\n[release]\nalembic_ini = "/etc/alembic.ini"\n',
        "release.alembic_ini",
        id="alembic-absolute",
    ),
    pytest.param(
        GOOD + '\n[release]\nalembic_ini = "../../alembic.ini"\n',
        "release.alembic_ini",
        id="alembic-dotdot",
    ),
    pytest.param(replace('name = "svc"', 'name = "s\\u0000vc"'), "NUL", id="nul-in-a-string"),
]


@pytest.mark.parametrize(("text", "expected"), CONFINED)
def test_paths_and_names_are_confined(text: str, expected: str) -> None:
    error = refused(text)
    assert expected in error.message


def test_messages_show_invisible_characters_instead_of_breaking_the_line() -> None:
    error = refused(replace("[environments.staging]", '[environments."a\\nb"]'))
    assert "a\\nb" in error.message


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_bytes(data)
    return path


FILES = [
    pytest.param(b"\xef\xbb\xbf" + GOOD.encode(), "byte-order mark", id="utf8-bom"),
    pytest.param(GOOD.encode("utf-16"), "UTF-16", id="utf16"),
    pytest.param(GOOD.encode("utf-16-le"), "not text", id="utf16-without-bom"),
    pytest.param(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "not text", id="binary"),
    pytest.param(GOOD.encode() + b"\n# caf\xe9\n", "not valid UTF-8", id="latin-1"),
    pytest.param(
        b"x = " + b"[" * 2000 + b"]" * 2000 + b"\n" + GOOD.encode(), "deep", id="deep-arrays"
    ),
    pytest.param(
        b"x = " + b"{a=" * 2000 + b"1" + b"}" * 2000 + b"\n", "deep", id="deep-inline-tables"
    ),
    pytest.param(b"x = " + b"[" * 40 + b"]" * 40 + b"\n" + GOOD.encode(), "deep", id="40-deep"),
    pytest.param(GOOD.encode() + b"#" * (MAX_CONFIG_BYTES + 10), "larger than", id="too-big"),
]


@pytest.mark.parametrize(("data", "expected"), FILES)
def test_the_file_is_read_with_limits(tmp_path: Path, data: bytes, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data))
    assert expected in caught.value.message
    assert caught.value.exit_code == ExitCode.USAGE
    assert "\n" not in caught.value.one_line()


def test_config_from_dev_zero_ends_at_the_size_limit() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("/dev/zero")
    assert "larger than" in caught.value.message


def test_config_naming_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path)


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xef\xbb\xbf" + GOOD.encode(), id="bom"),
        pytest.param(b"\xff\xfe\x00\x01binary", id="binary"),
        pytest.param(b"x = " + b"[" * 2000 + b"]" * 2000, id="deep"),
        pytest.param((GOOD + "\n[thresholds]\nhealth_ms = nan\n").encode(), id="nan"),
    ],
)
def test_config_check_says_one_line_and_exits_2(tmp_path: Path, data: bytes) -> None:
    result = invoke("--config", str(write(tmp_path, data)), "config", "check")
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ")


def test_config_check_json_never_prints_nan(tmp_path: Path) -> None:
    for value in ("nan", "inf", "1e308"):
        path = write(tmp_path, (GOOD + f"\n[thresholds]\nmemory_mb = {value}\n").encode())
        result = invoke("--config", str(path), "--json", "config", "check")
        assert "NaN" not in result.stdout and "Infinity" not in result.stdout
        json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))


def test_a_good_file_still_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD.encode()))
    assert math.isfinite(config.thresholds.health_ms)


def test_a_base_url_from_the_environment_is_checked_like_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYTOOLS_STAGING_BASE_URL", "http://admin:S3cretPass@127.0.0.1:99999")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, GOOD.encode()))
    assert "credentials" in caught.value.message
    assert "S3cretPass" not in caught.value.one_line()


@pytest.mark.parametrize("value", ["tcp://127.0.0.1:99999", "ssh://u@127.0.0.1:abc", "tcp://"])
def test_a_bad_docker_host_variable_is_a_usage_error_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """DOCKER_HOST is outside deploy.toml; an environment without docker_host uses it."""
    from deploytools.engine.connection import connect
    from deploytools.errors import UsageError

    monkeypatch.setenv("DOCKER_HOST", value)
    with pytest.raises(UsageError) as caught:
        connect("", timeout=1)
    assert caught.value.message.startswith("DOCKER_HOST ")
