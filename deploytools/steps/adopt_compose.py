"""What `deploytools init` reads from an existing Compose project: its services, the app's image
variable, port and healthcheck, the secrets the files require, Alembic's configuration and the
Dockerfile. Reading only: nothing here writes, and nothing runs a program.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from deploytools.errors import UsageError
from deploytools.proxy_settings import _healthcheck_target, interpolate

#: Compose files looked for when none is named, production-named ones first.
COMPOSE_CANDIDATES = (
    "docker-compose.prod.yml",
    "docker-compose.prod.yaml",
    "docker-compose.production.yml",
    "compose.prod.yaml",
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
)
#: Directories never searched for alembic.ini or a Dockerfile.
_SKIPPED_DIRS = frozenset({".git", ".venv", "venv", "node_modules", "__pycache__", ".tox"})
#: Images of services that are infrastructure, never the app.
_INFRA_IMAGE_RE = re.compile(
    r"(^|/)(postgres|postgis|redis|memcached|haproxy|nginx|traefik|caddy|envoy|rabbitmq|"
    r"mysql|mariadb|mongo|minio|kamal-proxy)([:@]|$)"
)
_POSTGRES_IMAGE_RE = re.compile(r"(^|/)(postgres|postgis)[^/]*([:@]|$)")
#: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}.
_VARIABLE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@dataclass(frozen=True)
class Port:
    """The app's port: inside the network, and where the host (or a proxy) publishes it."""

    container: int
    published: int | None = None
    #: The Compose variable that sets the published port (e.g. APP_PORT), if any.
    variable: str = ""
    #: The service that publishes it: the app itself or a proxy in front of it.
    publisher: str = ""


@dataclass(frozen=True)
class ComposeProject:
    """What init found in the project's directory."""

    root: Path
    compose_file: str
    name: str
    app_service: str
    database_service: str
    image_variable: str
    image_default: str
    port: Port | None
    health_path: str
    secrets: tuple[str, ...]
    alembic_ini: str
    migration_config: str
    dockerfile: str
    target: str
    remarks: tuple[str, ...] = field(default=())


def _usage(message: str, hint: str, **facts: Any) -> UsageError:
    return UsageError(message, untouched="nothing was written", hint=hint, facts=facts)


def find_compose_file(root: Path, given: str | None) -> str:
    """The Compose file: the one given, else the first of COMPOSE_CANDIDATES in `root`."""
    if given is not None:
        if not (root / given).is_file():
            raise _usage(f"no Compose file {given} in {root}", "pass --compose-file PATH")
        return given
    for name in COMPOSE_CANDIDATES:
        if (root / name).is_file():
            return name
    raise _usage(
        f"no Compose file in {root} (looked for {', '.join(COMPOSE_CANDIDATES)})",
        "run deploytools init in the root of your Compose project, or pass --compose-file",
        root=str(root),
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _usage(f"cannot read {path}: {exc}", "fix the Compose file") from None


def read_compose(path: Path, text: str | None = None) -> dict[str, Any]:
    """The Compose file at `path` as YAML (`text`: its contents, when already read)."""
    try:
        data = yaml.safe_load(_read_text(path) if text is None else text)
    except yaml.YAMLError as exc:
        raise _usage(f"cannot read {path}: {exc}", "fix the Compose file") from None
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or not services:
        raise _usage(f"{path} has no services", "pass --compose-file with the stack's file")
    return typing.cast("dict[str, Any]", data)


def _image(service: Mapping[str, Any]) -> str:
    image = service.get("image")
    return image if isinstance(image, str) else ""


def _image_default(service: Mapping[str, Any]) -> str:
    """The service's image with each `${VAR:-default}` replaced by its default."""
    return interpolate(_image(service), {})


def _env_keys(service: Mapping[str, Any]) -> set[str]:
    env = service.get("environment")
    if isinstance(env, dict):
        return {str(k) for k in env}
    if isinstance(env, list):
        return {str(item).split("=", 1)[0] for item in env}
    return set()


def pick_database(services: Mapping[str, Any], given: str | None) -> str:
    """The PostgreSQL service: the one given, else the only one with a postgres image."""
    if given is not None:
        if given not in services:
            raise _usage(f"no service {given} in the Compose file", "see its services: section")
        return given
    found = [n for n, s in services.items() if _POSTGRES_IMAGE_RE.search(_image_default(s))]
    if not found:
        found = [n for n, s in services.items() if "POSTGRES_PASSWORD" in _env_keys(s)]
    if len(found) != 1:
        raise _usage(
            f"cannot tell the PostgreSQL service (candidates: {', '.join(found) or 'none'})",
            "pass --database-service NAME",
            services=sorted(services),
        )
    return found[0]


def pick_app(services: Mapping[str, Any], database: str, given: str | None) -> str:
    """The app service: the one given, else the only service that is not infrastructure,
    preferring one whose image is a Compose variable (deploys set it)."""
    if given is not None:
        if given not in services:
            raise _usage(f"no service {given} in the Compose file", "see its services: section")
        return given
    apps = [
        n
        for n, s in services.items()
        if n != database and not _INFRA_IMAGE_RE.search(_image_default(s))
    ]
    variable = [n for n in apps if _VARIABLE_RE.search(_image(services[n]))]
    found = variable if len(variable) == 1 else apps
    if len(found) != 1:
        raise _usage(
            f"cannot tell the app service (candidates: {', '.join(found) or 'none'})",
            "pass --app-service NAME",
            services=sorted(services),
        )
    return found[0]


def image_variable(image: str) -> tuple[str, str]:
    """(variable, default) of an image written `${VAR:-default}`; ("", image) otherwise."""
    match = _VARIABLE_RE.fullmatch(image.strip())
    if match is None:
        return "", image
    return match.group(1), match.group(3) if match.group(2) in (":-", "-") else ""


def _port_entries(service: Mapping[str, Any]) -> Iterator[tuple[str, int | None, int]]:
    """(variable, published, container) of each published port of a service."""
    for entry in service.get("ports") or ():
        if isinstance(entry, dict):
            target = int(entry.get("target", 0) or 0)
            published = entry.get("published")
            text = str(published) if published is not None else ""
        else:
            text, _, container = str(entry).rpartition(":")
            target = int(re.sub(r"/.*$", "", container) or 0)
            text = text.rsplit(":", 1)[-1] if ":" in text and "${" not in text else text
        variable_match = _VARIABLE_RE.search(text)
        if variable_match:
            default = variable_match.group(3) or ""
            yield variable_match.group(1), int(default) if default.isdigit() else None, target
        else:
            yield "", int(text) if text.isdigit() else None, target


def find_port(services: Mapping[str, Any], app: str) -> Port | None:
    """The app's port inside the network, and where it is published: by the app itself, or
    by a proxy service in front of it."""
    service = services[app]
    for variable, published, container in _port_entries(service):
        return Port(container, published, variable, app)
    exposed = [
        int(str(p).split("/")[0]) for p in service.get("expose") or () if str(p)[:1].isdigit()
    ]
    container = exposed[0] if exposed else 0
    for name, other in services.items():
        if name == app:
            continue
        for variable, published, _ in _port_entries(other):
            return Port(container, published, variable, name)
    return Port(container) if container else None


def health_path(service: Mapping[str, Any]) -> str:
    """The HTTP path the app's Docker healthcheck asks, if it asks one (read as the proxy
    reads it)."""
    return _healthcheck_target(service.get("healthcheck"))[1] or ""


def required_variables(texts: Sequence[str]) -> tuple[str, ...]:
    """Variables the Compose files require (`${NAME}` or `${NAME:?...}`, no default): the
    secrets and settings each environment must provide."""
    required = {
        match.group(1)
        for text in texts
        for match in _VARIABLE_RE.finditer(text)
        if match.group(2) not in (":-", "-")
    }
    return tuple(sorted(required))


def find_files(root: Path, names: Sequence[str]) -> dict[str, str]:
    """Each of `names` found under `root` (at most 3 directories down, _SKIPPED_DIRS never
    entered), the shallowest first then by path, relative to root; "" when not found. One walk
    of the tree for all of them."""
    found: dict[str, list[tuple[str, ...]]] = {name: [] for name in names}
    for directory, subdirs, files in os.walk(root):
        where = Path(directory).relative_to(root).parts
        subdirs[:] = [d for d in subdirs if d not in _SKIPPED_DIRS] if len(where) < 3 else []
        for name in found.keys() & set(files):
            found[name].append((*where, name))
    return {name: _shallowest(paths) for name, paths in found.items()}


def _shallowest(paths: list[tuple[str, ...]]) -> str:
    """The path with the fewest parts, then the first by its parts; "" when none."""
    ordered = sorted(paths, key=lambda parts: (len(parts), parts))
    return "/".join(ordered[0]) if ordered else ""


def dockerfile_facts(text: str) -> tuple[str, str]:
    """(the final stage's name when the build has several stages, the final WORKDIR)."""
    stages: list[str] = []
    workdir = ""
    for raw in text.splitlines():
        line = raw.strip()
        words = line.split()
        if not words:
            continue
        keyword = words[0].upper()
        if keyword == "FROM":
            stages.append(words[3] if len(words) >= 4 and words[2].upper() == "AS" else "")
            workdir = ""
        elif keyword == "WORKDIR" and len(words) >= 2:
            value = words[1]
            workdir = value if value.startswith("/") else f"{workdir.rstrip('/')}/{value}"
    target = stages[-1] if len(stages) > 1 else ""
    return target, workdir


def inspect_project(
    root: Path,
    *,
    compose_file: str | None = None,
    app_service: str | None = None,
    database_service: str | None = None,
) -> ComposeProject:
    """Read the Compose project in `root`.

    :param root: the project's directory (where deploy.toml will be written).
    :param compose_file: the Compose file, relative to root; None: found (COMPOSE_CANDIDATES).
    :param app_service: the app's service; None: the one service that is not infrastructure.
    :param database_service: the PostgreSQL service; None: the one with a postgres image.
    :raises UsageError: no Compose file, or a service that cannot be told (nothing written).
    """
    name = find_compose_file(root, compose_file)
    text = _read_text(root / name)  # read once: parsed here, searched for secrets below
    data = read_compose(root / name, text)
    services: dict[str, Any] = data["services"]
    database = pick_database(services, database_service)
    app = pick_app(services, database, app_service)
    remarks: list[str] = []
    variable, default = image_variable(_image(services[app]))
    if not variable:
        remarks.append(
            f"the {app} service's image is not a Compose variable: write it "
            "`image: ${APP_IMAGE}` so that deploys can set it"
        )
        variable = "APP_IMAGE"
    found = find_files(root, ("alembic.ini", "Dockerfile"))
    alembic_ini, dockerfile = found["alembic.ini"], found["Dockerfile"]
    target, workdir = "", ""
    if dockerfile:
        target, workdir = dockerfile_facts((root / dockerfile).read_text(encoding="utf-8"))
    else:
        remarks.append("no Dockerfile found: image build needs one ([image] dockerfile)")
    if not alembic_ini:
        remarks.append("no alembic.ini: set project.migration_command and release.alembic_ini")
    migration_config = (
        str(PurePosixPath(workdir) / alembic_ini) if workdir and alembic_ini else alembic_ini
    )
    project_name = data.get("name") if isinstance(data.get("name"), str) else root.name
    return ComposeProject(
        root=root,
        compose_file=name,
        name=str(project_name),
        app_service=app,
        database_service=database,
        image_variable=variable,
        image_default=default,
        port=find_port(services, app),
        health_path=health_path(services[app]),
        secrets=required_variables([text]),
        alembic_ini=alembic_ini or "alembic.ini",
        migration_config=migration_config or "alembic.ini",
        dockerfile=dockerfile,
        target=target,
        remarks=tuple(remarks),
    )
