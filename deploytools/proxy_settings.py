"""What the proxy and the rolling deploy need to know about the app, resolved for one
environment: the port it listens on in the project network, its health route and the answer
that says it is up, the proxy's image and where deploytools' own proxy publishes.

Each value comes from deploy.toml's [proxy] when set there, else from the app service in the
Compose files (its `expose` or `ports` target, its healthcheck's URL or HTTP request line),
else from the defaults the reference stack was written with (8080, /health answering
{"status": "ok"}). The Compose files are read as YAML, with `${VAR:-default}` interpolated
from the environment's variables and ours: no Compose process is started for it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deploytools.config import Config, EnvironmentConfig, JsonScalar, proxy_publish
from deploytools.errors import ConfigError

#: The last defaults: what deploytools assumed before any of this was configuration.
DEFAULT_APP_PORT = 8080
DEFAULT_HEALTH_PATH = "/health"
DEFAULT_HEALTH_EXPECT: Mapping[str, JsonScalar] = {"status": "ok"}
DEFAULT_PROXY_IMAGE = "haproxy:2.8"
#: The variable docker-compose.prod.yml names the proxy's image with; deploytools' own proxy
#: honours it too (the suite sets it where no registry answers).
PROXY_IMAGE_VARIABLE = "PROXY_IMAGE"


@dataclass(frozen=True)
class HealthAnswer:
    """The app's health route and the answer that says the app is up."""

    path: str = DEFAULT_HEALTH_PATH
    status: int = 200
    #: None: any body; a mapping: dotted JSON fields and their values; a scalar: the whole
    #: JSON body.
    expect: JsonScalar | Mapping[str, JsonScalar] | None = None

    def describe(self) -> str:
        want = f"{self.path} answering {self.status}"
        if self.expect is None:
            return want
        return f"{want} with {json.dumps(_plain(self.expect), sort_keys=True)}"

    def problems(self, status: int, body: str) -> list[str]:
        """What is wrong with an answer (`status`, `body`), in words; [] when it is the one
        expected."""
        if status != self.status:
            return [f"status {status}, want {self.status}"]
        if self.expect is None:
            return []
        try:
            document = json.loads(body)
        except ValueError:
            return [f"the body is not JSON: {body[:100]!r}"]
        if not isinstance(self.expect, Mapping):
            if document != self.expect or type(document) is not type(self.expect):
                return [f"the body is {json.dumps(document)}, want {json.dumps(self.expect)}"]
            return []
        # Imported here: the checks' JSON helpers, not the checks themselves.
        from deploytools.checks.http import json_mismatches

        return json_mismatches(document, self.expect)


@dataclass(frozen=True)
class ComposeApp:
    """What the Compose files say about the app service (None: they say nothing)."""

    port: int | None = None
    health_path: str | None = None
    #: Host ports the service publishes itself ("8000:8000"): a second container of it
    #: cannot start beside the first, and the port is taken for the proxy.
    published: tuple[int, ...] = ()
    #: Every service the files define.
    services: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ProxySettings:
    """The proxy's settings for one environment, every default resolved."""

    app_port: int
    health: HealthAnswer
    image: str
    #: Where deploytools' own proxy publishes: (host address, "" for all; port).
    publish: tuple[str, int]
    #: The Compose service that is the proxy, when the files define it; "" = deploytools' own.
    compose_service: str
    app: ComposeApp


def resolve(
    config: Config, environment: EnvironmentConfig, environ: Mapping[str, str] | None = None
) -> ProxySettings:
    """The proxy's settings for `environment` (see the module's docstring for the order)."""
    environ = os.environ if environ is None else environ
    variables = {**environ, **environment.variables}
    app = read_compose_app(config.compose_file_paths(), config.project.app_service, variables)
    given = config.proxy
    path = given.health_path or app.health_path
    expect: JsonScalar | Mapping[str, JsonScalar] | None = given.health_expect
    if expect is None and not path:
        expect = DEFAULT_HEALTH_EXPECT
    health = HealthAnswer(path or DEFAULT_HEALTH_PATH, given.health_status, expect)
    image = given.image or variables.get(PROXY_IMAGE_VARIABLE) or DEFAULT_PROXY_IMAGE
    publish = (
        proxy_publish(given.ports[environment.name]) if environment.name in given.ports else None
    )
    service = given.compose_service if given.compose_service in app.services else ""
    return ProxySettings(
        app_port=given.app_port or app.port or DEFAULT_APP_PORT,
        health=health,
        image=image,
        publish=publish or ("", _base_url_port(environment.base_url)),
        compose_service=service,
        app=app,
    )


def _base_url_port(url: str) -> int:
    try:
        return urlsplit(url).port or 80
    except ValueError:
        return 80


def read_compose_app(
    files: Sequence[Path], service: str, variables: Mapping[str, str]
) -> ComposeApp:
    """The app service's port, health path and published ports in `files` (later files
    override earlier ones, key by key, as Compose merges them)."""
    # Imported here: only a deploy that needs the proxy reads YAML.
    import yaml

    merged: dict[str, Any] = {}
    services: set[str] = set()
    for path in files:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            continue  # Target.compose_files says so when a command needs the file
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ConfigError(
                f"cannot read the Compose file {path}: {error}",
                untouched="nothing was done",
                hint="fix the file (project.compose_files)",
            ) from None
        defined = document.get("services") if isinstance(document, dict) else None
        if not isinstance(defined, dict):
            continue
        services.update(str(name) for name in defined)
        if isinstance(defined.get(service), dict):
            merged.update(defined[service])
    merged = _interpolated(merged, variables)
    health_port, health_path = _healthcheck_target(merged.get("healthcheck"))
    targets, published = _ports(merged.get("ports"))
    exposed = [p for p in (_container_port(e) for e in _listed(merged.get("expose"))) if p]
    return ComposeApp(
        port=next(iter(exposed + targets), health_port),
        health_path=health_path,
        published=tuple(published),
        services=frozenset(services),
    )


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_VARIABLE_RE = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation of one string: $$, $VAR, ${VAR}, ${VAR:-default},
    ${VAR-default}, ${VAR:+other}; ${VAR:?message} is the variable or ""."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(5)
        operator, word = match.group(3), match.group(4) or ""
        value = variables.get(name)
        if operator in (":-", "-"):
            empty = value is None or (operator == ":-" and value == "")
            return word if empty else str(value)
        if operator in (":+", "+"):
            present = value is not None and (operator == "+" or value != "")
            return word if present else ""
        return value or ""

    return _VARIABLE_RE.sub(replace, text)


def _interpolated(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, variables)
    if isinstance(value, list):
        return [_interpolated(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _interpolated(v, variables) for k, v in value.items()}
    return value


def _container_port(value: Any) -> int | None:
    """ "8080", 8080, "8080/tcp" -> 8080; a range or anything else -> None."""
    match = re.fullmatch(r"([0-9]{1,5})(?:/tcp)?", str(value).strip())
    return int(match.group(1)) if match and 1 <= int(match.group(1)) <= 65_535 else None


def _ports(value: Any) -> tuple[list[int], list[int]]:
    """The container ports (targets) of a `ports` list, and the host ports it fixes."""
    targets: list[int] = []
    published: list[int] = []
    for entry in _listed(value):
        if isinstance(entry, dict):
            target = _container_port(entry.get("target", ""))
            host = _container_port(str(entry.get("published", "")).split("-")[0])
        else:
            parts = str(entry).split(":")
            target = _container_port(parts[-1])
            host = _container_port(parts[-2].split("-")[0]) if len(parts) >= 2 else None
        if target:
            targets.append(target)
        if host:
            published.append(host)
    return targets, published


#: A URL in a healthcheck's test (curl, wget, python's urllib): its port and path.
_URL_RE = re.compile(r"https?://(?:\[[^\]/]*\]|[^/:\s'\"\\]+)(?::([0-9]{1,5}))?(/[^\s'\"\\;,)]*)?")
#: An HTTP request written by hand (bash's /dev/tcp, nc): its path, and the port connected to.
_REQUEST_RE = re.compile(r"GET\s+(/[^\s'\"\\]*)\s+HTTP/")
_DEV_TCP_RE = re.compile(r"/dev/tcp/[^/\s]+/([0-9]{1,5})")


def _healthcheck_target(healthcheck: Any) -> tuple[int | None, str | None]:
    """The port and path the app's healthcheck asks, when it asks an HTTP route."""
    if not isinstance(healthcheck, dict) or healthcheck.get("disable"):
        return None, None
    test = healthcheck.get("test")
    text = " ".join(str(t) for t in test) if isinstance(test, list) else str(test or "")
    url = _URL_RE.search(text)
    if url:
        port = int(url.group(1)) if url.group(1) else None
        return port, url.group(2) or "/"
    request = _REQUEST_RE.search(text)
    tcp = _DEV_TCP_RE.search(text)
    return (int(tcp.group(1)) if tcp else None), (request.group(1) if request else None)


def _plain(value: JsonScalar | Mapping[str, JsonScalar]) -> Any:
    return dict(value) if isinstance(value, Mapping) else value
