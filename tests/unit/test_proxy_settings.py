"""The proxy's settings: deploy.toml's [proxy], else the app service in the Compose files,
else the reference stack's values (8080, /health answering {"status": "ok"})."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploytools.config import parse_config, proxy_publish
from deploytools.errors import ConfigError
from deploytools.proxy_settings import (
    DEFAULT_PROXY_IMAGE,
    HealthAnswer,
    interpolate,
    read_compose_app,
    resolve,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

BASE = """
[project]
name = "svc"
image_repository = "example/svc"
compose_files = ["compose.yml"]
app_service = "web"
database_service = "db"
migration_command = ["true"]

[environments.staging]
compose_project = "svc-staging"
base_url = "http://127.0.0.1:9001"

[environments.production]
compose_project = "svc-production"
base_url = "https://svc.example.com"
"""

#: A service nobody here wrote: port 8000, health at /healthz (python's urllib probe).
SMALL_APP = """
services:
  db:
    image: postgres:16
  web:
    image: ${APP_IMAGE:-example/svc:latest}
    expose: ["${WEB_PORT:-8000}"]
    healthcheck:
      test: ["CMD", "python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz')"]
"""


def config_in(tmp_path: Path, compose: str, extra: str = "") -> object:
    (tmp_path / "compose.yml").write_text(compose)
    path = tmp_path / "deploy.toml"
    path.write_text(BASE + extra)
    return parse_config(path.read_text(), path)


def test_the_compose_files_app_port_and_health_route_are_the_defaults(tmp_path: Path) -> None:
    config = config_in(tmp_path, SMALL_APP)
    settings = resolve(config, config.environments["staging"], {})  # type: ignore[attr-defined]
    assert settings.app_port == 8000
    # Found in the healthcheck: the status alone is expected, as the healthcheck does.
    assert settings.health == HealthAnswer("/healthz", 200, None)
    assert settings.image == DEFAULT_PROXY_IMAGE
    assert settings.publish == ("", 9001)  # the base_url's port
    assert settings.compose_service == ""  # no proxy service: deploytools' own
    assert settings.app.published == ()


def test_deploy_toml_wins_over_the_compose_file(tmp_path: Path) -> None:
    extra = """
[proxy]
image = "registry.example.com/haproxy:2.9"
app_port = 9000
health_path = "/ready"
health_status = 204
health_expect = true
ports = { production = "127.0.0.1:8443" }
"""
    config = config_in(tmp_path, SMALL_APP, extra)
    production = config.environments["production"]  # type: ignore[attr-defined]
    settings = resolve(config, production, {"PROXY_IMAGE": "ignored:1"})  # type: ignore[arg-type]
    assert settings.app_port == 9000
    assert settings.health == HealthAnswer("/ready", 204, True)
    assert settings.image == "registry.example.com/haproxy:2.9"
    assert settings.publish == ("127.0.0.1", 8443)


def test_an_https_base_url_without_a_port_publishes_80(tmp_path: Path) -> None:
    config = config_in(tmp_path, SMALL_APP)
    production = config.environments["production"]  # type: ignore[attr-defined]
    assert resolve(config, production, {}).publish == ("", 80)  # type: ignore[arg-type]


def test_the_environments_variables_are_interpolated(tmp_path: Path) -> None:
    config = config_in(tmp_path, SMALL_APP.replace("staging", "x"))
    staging = config.environments["staging"]  # type: ignore[attr-defined]
    from dataclasses import replace

    staging = replace(staging, variables={"WEB_PORT": "8123"})
    settings = resolve(config, staging, {"PROXY_IMAGE": "local/haproxy:1"})  # type: ignore[arg-type]
    assert settings.app_port == 8123
    assert settings.image == "local/haproxy:1"


def test_the_reference_stack_keeps_todays_values() -> None:
    from deploytools.config import load_config

    config = load_config(REPO_ROOT / "deploy.toml")
    settings = resolve(config, config.environments["production"], {})
    assert settings.app_port == 8080
    assert settings.health.path == "/health"
    assert settings.health.expect == {"status": "ok"}
    assert settings.compose_service == "proxy"  # docker-compose.prod.yml's own proxy service
    assert settings.image == DEFAULT_PROXY_IMAGE


def test_with_nothing_anywhere_todays_defaults_apply(tmp_path: Path) -> None:
    config = config_in(tmp_path, "services:\n  web:\n    image: x\n")
    settings = resolve(config, config.environments["staging"], {})  # type: ignore[attr-defined]
    assert settings.app_port == 8080
    assert settings.health == HealthAnswer("/health", 200, {"status": "ok"})


@pytest.mark.parametrize(
    ("service", "port", "path", "published"),
    [
        # ports: the container side is the app's port; a host port is the app's own.
        ({"ports": ["8000:8000"]}, 8000, None, (8000,)),
        ({"ports": ["127.0.0.1:9000:3000/tcp"]}, 3000, None, (9000,)),
        ({"ports": ["5000"]}, 5000, None, ()),
        ({"ports": [{"target": 7000, "published": "7001"}]}, 7000, None, (7001,)),
        ({"expose": [8080], "ports": ["80:8081"]}, 8080, None, (80,)),
        # healthchecks: curl, wget, bash's /dev/tcp, a shell string.
        (
            {"healthcheck": {"test": ["CMD", "curl", "-f", "http://localhost:3000/up"]}},
            3000,
            "/up",
            (),
        ),
        ({"healthcheck": {"test": "wget -qO- http://127.0.0.1/ping || exit 1"}}, None, "/ping", ()),
        (
            {
                "healthcheck": {
                    "test": [
                        "CMD",
                        "bash",
                        "-c",
                        "exec 3<>/dev/tcp/127.0.0.1/8080 && "
                        "printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3",
                    ]
                }
            },
            8080,
            "/health",
            (),
        ),
        ({"healthcheck": {"test": ["CMD", "pg_isready"]}}, None, None, ()),
        ({"healthcheck": {"disable": True, "test": "curl http://x:1/a"}}, None, None, ()),
        ({}, None, None, ()),
    ],
)
def test_read_compose_app(
    tmp_path: Path,
    service: dict[str, object],
    port: int | None,
    path: str | None,
    published: tuple[int, ...],
) -> None:
    import yaml

    (tmp_path / "c.yml").write_text(yaml.safe_dump({"services": {"web": service}}))
    app = read_compose_app([tmp_path / "c.yml"], "web", {})
    assert (app.port, app.health_path, app.published) == (port, path, published)


def test_later_compose_files_override_earlier_ones(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("services:\n  web:\n    ports: ['8000:8000']\n")
    (tmp_path / "b.yml").write_text("services:\n  web:\n    ports: ['9000']\n  proxy: {}\n")
    app = read_compose_app([tmp_path / "a.yml", tmp_path / "b.yml"], "web", {})
    assert (app.port, app.published, app.services) == (9000, (), frozenset({"web", "proxy"}))


def test_a_compose_file_that_is_not_yaml_is_named(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text("services: [\n")
    with pytest.raises(ConfigError, match="cannot read the Compose file"):
        read_compose_app([tmp_path / "c.yml"], "web", {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A:-1}", "1"),
        ("${B:-1}", "2"),
        ("${E:-d}", "d"),
        ("${E-d}", ""),
        ("${B:?x}", "2"),
        ("$B/$$B", "2/$B"),
        ("${B:+on}", "on"),
        ("${A:+on}", ""),
    ],
)
def test_interpolate(text: str, expected: str) -> None:
    assert interpolate(text, {"B": "2", "E": ""}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("8080", ("", 8080)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:81", ("::1", 81))],
)
def test_proxy_publish(value: str, expected: tuple[str, int]) -> None:
    assert proxy_publish(value) == expected


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[proxy]\nports = { qa = "80" }\n', "names no environment"),
        ('[proxy]\nports = { staging = "http" }\n', '"PORT" or "ADDRESS:PORT"'),
        ('[proxy]\nports = { staging = "70000" }\n', '"PORT" or "ADDRESS:PORT"'),
        ('[proxy]\nhealth_path = "healthz"\n', 'starting with "/"'),
        ("[proxy]\napp_port = 70000\n", "at most 65535"),
        ("[proxy]\nhealth_status = 42\n", "at least 100"),
        ("[proxy]\nhealth_expect = [1]\n", "health_expect"),
        ('[proxy]\ncompose_service = "a b"\n', "compose_service"),
        ("[proxy]\nhealth_pth = 1\n", 'did you mean "health_path"'),
    ],
)
def test_bad_proxy_settings_are_refused_when_loaded(
    tmp_path: Path, extra: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace('"', '"')):
        config_in(tmp_path, SMALL_APP, extra)


@pytest.mark.parametrize(
    ("expect", "status", "body", "problems"),
    [
        (True, 200, "true", []),
        (True, 200, "1", ["the body is 1, want true"]),
        ({"status": "ok"}, 200, '{"status": "ok", "v": 1}', []),
        ({"status": "ok"}, 200, "not json", ["the body is not JSON: 'not json'"]),
        (None, 500, "", ["status 500, want 200"]),
    ],
)
def test_health_answer_problems(
    expect: object, status: int, body: str, problems: list[str]
) -> None:
    assert HealthAnswer("/h", 200, expect).problems(status, body) == problems  # type: ignore[arg-type]


def test_a_stack_whose_app_publishes_its_own_port_cannot_switch(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from deploytools import proxy

    published = SMALL_APP.replace('expose: ["${WEB_PORT:-8000}"]', 'ports: ["8000:8000"]')
    config: Any = config_in(tmp_path, published)
    target: Any = SimpleNamespace(config=config)
    resolved = resolve(config, config.environments["staging"], {})
    refusal = proxy.switch_refusal(target, resolved)
    assert refusal is not None and "publishes host port 8000 itself" in refusal
    config = config_in(tmp_path, SMALL_APP)
    target = SimpleNamespace(config=config)
    assert proxy.switch_refusal(target, resolve(config, config.environments["staging"], {})) is None


def test_deploytools_own_proxy_container_is_specified_as_data(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from deploytools import proxy
    from deploytools.engine.client import PROJECT_LABEL, SERVICE_LABEL

    config: Any = config_in(tmp_path, SMALL_APP)
    resolved = resolve(config, config.environments["staging"], {})
    target: Any = SimpleNamespace(config=config, project="svc-staging")
    spec = proxy.owned_spec(target, resolved, "svc-staging_default")
    assert spec.name == "svc-staging-deploytools-proxy"
    assert spec.image == DEFAULT_PROXY_IMAGE
    assert spec.network == "svc-staging_default"
    assert spec.publish_fixed == {"80/tcp": ("", 9001)}
    assert spec.labels[PROJECT_LABEL] == "svc-staging"
    assert spec.labels[SERVICE_LABEL] == proxy.OWNED_SERVICE
    assert (spec.restart, spec.stop_signal) == ("unless-stopped", "SIGUSR1")
    (conf,) = spec.environment
    assert conf == "DEPLOYTOOLS_PROXY_CONF=" + proxy.render("web", app_port=8000)
    assert "server app web:8000 " in conf
