"""`deploy.toml` -> frozen dataclasses, validated eagerly and completely when loaded.

The annotated `deploy.toml` at the repository root is the configuration reference; the dataclasses
here are its schema. Loading walks the whole file once: an unknown key names itself, the file and
the nearest valid key; a wrong type names the expected one; a missing required key says which.
Nothing else in deploytools reads the file or checks these values again.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

from deploytools import deploy_windows
from deploytools.deploy_windows import WindowsConfig
from deploytools.errors import ConfigError

DEFAULT_CONFIG_FILE = "deploy.toml"

_COMPOSE_PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A workflow file name under .github/workflows/ (GitHub also accepts the numeric workflow ID).
_WORKFLOW_FILE_RE = re.compile(r"^$|^[A-Za-z0-9_.-]+\.ya?ml$|^[0-9]+$")
_DOCKER_HOST_SCHEMES = ("unix://", "tcp://", "ssh://", "npipe://")


@dataclass(frozen=True)
class ProjectConfig:
    """What is released: the service, its image and its Compose stack."""

    name: str
    image_repository: str
    compose_files: tuple[str, ...]
    app_service: str
    database_service: str
    migration_command: tuple[str, ...]
    source_dir: str = "."
    release_branch: str = "main"
    remote: str = "origin"


@dataclass(frozen=True)
class EnvironmentConfig:
    """One place the service runs: a Docker engine and a Compose project on it."""

    compose_project: str
    base_url: str
    docker_host: str = ""
    requires_approval: bool = False
    variables: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    # Filled in from the table's key, never read from the file.
    name: str = field(default="", metadata={"derived": True})

    @property
    def is_local(self) -> bool:
        return self.docker_host == ""


@dataclass(frozen=True)
class Thresholds:
    """The runbook's success metrics ("Deployment Metrics & Targets")."""

    health_ms: float = 100.0
    api_p95_ms: float = 200.0
    error_rate_percent: float = 0.1
    permission_check_ms: float = 1.0
    auth_success_percent: float = 99.0
    database_latency_ms: float = 100.0
    cpu_percent: float = 20.0
    memory_mb: float = 500.0


@dataclass(frozen=True)
class BackupConfig:
    """Where backups live (with the target, so every runner sees them) and how many to keep."""

    store: str = "volume:deploytools-backups"
    retention: int = 10
    # Compose volumes of the stack snapshotted (tar) with every backup, restored with it.
    volumes: tuple[str, ...] = ()
    # An off-host copy of every backup: "dir:/absolute/path" where deploytools runs, or
    # "s3://bucket/prefix"; "" = none.
    copy_to: str = ""
    # The S3-compatible server's URL for an s3:// copy_to ("" = AWS).
    s3_endpoint_url: str = ""
    # The environment variable holding a Fernet key that encrypts the copies; "" = unencrypted.
    encryption_key_env: str = ""

    @property
    def store_kind(self) -> str:
        return self.store.split(":", 1)[0]

    @property
    def store_location(self) -> str:
        return self.store.split(":", 1)[1]


@dataclass(frozen=True)
class GitHubConfig:
    """The GitHub repository whose deployments and environments deploytools reads and writes."""

    repository: str = ""
    token_env: str = "GITHUB_TOKEN"  # noqa: S105 - the name of a variable, not a token
    # The REST API root: GitHub Enterprise Server has its own (https://HOST/api/v3).
    api_url: str = "https://api.github.com"
    # The code-quality gate's workflow file (tests, linters, scans): release verify reads its
    # run on the tagged commit and lists its jobs as the report's "Code quality status".
    # "" turns that check off.
    ci_workflow: str = "ci.yml"
    # Seconds release verify waits for that run to finish (a tag pushed together with its
    # commit starts the release while the gate still runs); 0 reads it once.
    ci_wait_s: float = 900.0


@dataclass(frozen=True)
class NotificationsConfig:
    """Where `deploytools notify` sends. The URLs are secrets: the file names the environment
    variables that hold them, never the URLs. An unset or empty variable turns that hook off."""

    slack_webhook_env: str = "SLACK_WEBHOOK_URL"
    status_page_hook_env: str = "STATUS_PAGE_HOOK_URL"
    # Seconds one webhook request may take.
    timeout_s: float = 10.0
    # Whether a webhook that fails makes `notify` fail (exit 3); by default it is reported only.
    required: bool = False


@dataclass(frozen=True)
class DeployConfig:
    """How deploy, migrate and rollback behave: deadlines, the lock, what they keep."""

    # The Compose variable that names the app's image (docker-compose.prod.yml's APP_IMAGE).
    image_variable: str = "APP_IMAGE"
    health_timeout_s: float = 120.0
    migration_timeout_s: float = 600.0
    lock_ttl_s: int = 3600
    keep_images: int = 3
    migration_env: Mapping[str, str] = field(
        default_factory=lambda: {
            "ALEMBIC_LOCK_TIMEOUT": "5s",
            "ALEMBIC_STATEMENT_TIMEOUT": "60s",
        }
    )


@dataclass(frozen=True)
class ReleaseConfig:
    """What `release verify` demands of a release tag beyond the built-in checks."""

    require_signed_tag: bool = False
    # The Alembic configuration, relative to the service's source directory in the release repo.
    alembic_ini: str = "alembic.ini"


@dataclass(frozen=True)
class ContactTier:
    """One tier of the escalation: who is called, and after how long without an answer."""

    name: str
    people: tuple[str, ...]
    after_min: int = 0


@dataclass(frozen=True)
class ContactsConfig:
    """Who is told and who is called when a release fails (the report, failure notices)."""

    tiers: tuple[ContactTier, ...] = ()
    slack_channel: str = ""
    status_page: str = ""
    email_list: str = ""


#: A value a check sends or expects in a JSON body.
JsonScalar = str | bool | int | float

#: The command groups a check can belong to (runbook steps 2, 3, 6 and 7).
CHECK_SUITES = ("smoke", "validate", "verify", "monitor")
_DEFAULT_SUITES = ("smoke", "validate", "verify")


@dataclass(frozen=True)
class CheckUser:
    """A test user of the checks; its credentials are read from environment variables."""

    username_env: str
    password_env: str
    # The role the user is created with when it does not exist yet ("" = never created).
    role: str = ""


@dataclass(frozen=True)
class LoginSettings:
    """How the checks obtain a bearer token for a test user."""

    path: str = "/auth/login"
    username_field: str = "username"
    password_field: str = "password"  # noqa: S105 - a JSON field name, not a password
    token_field: str = "access_token"  # noqa: S105 - a JSON field name, not a token


@dataclass(frozen=True)
class ProbeCheck:
    """One HTTP request and what its answer must be."""

    name: str
    path: str
    method: str = "GET"
    user: str = ""
    body: Mapping[str, JsonScalar] = field(default_factory=dict)
    expect_status: int = 200
    expect_json: Mapping[str, JsonScalar] = field(default_factory=dict)
    expect_fields: tuple[str, ...] = ()
    budget_ms: float = 0.0
    budget: str = ""
    suites: tuple[str, ...] = _DEFAULT_SUITES


@dataclass(frozen=True)
class RbacCheck:
    """A user with a role gets this status on this route."""

    user: str
    path: str
    expect_status: int
    method: str = "GET"
    body: Mapping[str, JsonScalar] = field(default_factory=dict)
    suites: tuple[str, ...] = _DEFAULT_SUITES


@dataclass(frozen=True)
class LatencyCheck:
    """An open-model load test: requests at a fixed rate, a percentile against a threshold."""

    path: str
    name: str = "api p95"
    method: str = "GET"
    user: str = ""
    expect_status: int = 200
    rate_per_s: float = 20.0
    duration_s: float = 10.0
    percentile: float = 95.0
    threshold: str = "api_p95_ms"
    min_samples: int = 100
    concurrency: int = 32
    suites: tuple[str, ...] = _DEFAULT_SUITES


@dataclass(frozen=True)
class DatabaseCheck:
    """The database as the service's health endpoint reports it."""

    path: str = "/health"
    reachable_field: str = "database.reachable"
    round_trip_field: str = "database.round_trip_ms"
    revision_field: str = "database.alembic_revision"
    expected_revision: str = "head"
    revision_command: tuple[str, ...] = ("alembic", "-c", "/app/alembic.ini", "heads")
    suites: tuple[str, ...] = _DEFAULT_SUITES
    revision_suites: tuple[str, ...] = ("validate", "verify")


@dataclass(frozen=True)
class LogScan:
    """Lines in the service's logs, since the deploy, that count as errors."""

    patterns: tuple[str, ...] = (
        '"level": "ERROR"',
        '"level": "CRITICAL"',
        "Traceback (most recent call last)",
    )
    service: str = ""
    suites: tuple[str, ...] = ("validate", "verify")


@dataclass(frozen=True)
class UserFlow:
    """validate's end-to-end flow: create a user, assign a role, allowed, revoke, denied."""

    role: str
    resource: str
    users_path: str = "/users"
    assign_path: str = "/users/{id}/roles"
    revoke_path: str = "/users/{id}/roles/{role}"
    username_prefix: str = "deploytools-flow-"
    suites: tuple[str, ...] = ("validate",)


@dataclass(frozen=True)
class MetricRule:
    """A threshold on the service's Prometheus metrics, evaluated by `monitor`."""

    name: str
    metric: str
    threshold: str
    kind: str = "ratio"
    match: Mapping[str, str] = field(default_factory=dict)
    among: Mapping[str, str] = field(default_factory=dict)
    quantile: float = 0.95
    scale: float = 1.0
    below: bool = True
    min_count: int = 20


@dataclass(frozen=True)
class MonitorSettings:
    """How `monitor` samples and when a breach counts."""

    metrics_path: str = "/metrics"
    interval_s: float = 30.0
    consecutive_failures: int = 3
    failure_limit: int = 5
    container_stats: bool = True
    baseline_tolerance: float = 2.0


@dataclass(frozen=True)
class ChecksConfig:
    """The checks of smoke, validate, verify and monitor."""

    timeout_s: float = 5.0
    admin_user: str = ""
    users_path: str = "/users"
    error_fields: tuple[str, ...] = ()
    users: Mapping[str, CheckUser] = field(default_factory=dict)
    login: LoginSettings = field(default_factory=LoginSettings)
    database: DatabaseCheck | None = None
    probes: tuple[ProbeCheck, ...] = ()
    rbac: tuple[RbacCheck, ...] = ()
    latency: tuple[LatencyCheck, ...] = ()
    logs: LogScan | None = None
    flow: UserFlow | None = None
    metrics: tuple[MetricRule, ...] = ()
    monitor: MonitorSettings = field(default_factory=MonitorSettings)


@dataclass(frozen=True)
class Config:
    project: ProjectConfig
    environments: Mapping[str, EnvironmentConfig]
    thresholds: Thresholds = field(default_factory=Thresholds)
    backups: BackupConfig = field(default_factory=BackupConfig)
    github: GitHubConfig = field(default_factory=GitHubConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    windows: Mapping[str, WindowsConfig] = field(default_factory=dict)
    contacts: ContactsConfig = field(default_factory=ContactsConfig)
    # Where it was read from; not a key of the file.
    path: Path = field(default=Path(DEFAULT_CONFIG_FILE), metadata={"derived": True})

    @property
    def root(self) -> Path:
        """The directory relative paths of the configuration are resolved against."""
        return self.path.resolve().parent

    def environment(self, name: str) -> EnvironmentConfig:
        """The environment called `name`, or a ConfigError naming the ones that exist."""
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            suggestion = _suggest(name, list(self.environments))
            raise ConfigError(
                f'unknown environment "{name}" in {self.path} (known: {known}){suggestion}',
                untouched="nothing was done",
                hint=f"pass one of: {known}",
                facts={"environment": name, "known": sorted(self.environments)},
            ) from None

    def compose_file_paths(self) -> tuple[Path, ...]:
        return tuple(self.root / f for f in self.project.compose_files)


T = TypeVar("T")


def _suggest(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0]).removeprefix('a ')}s"
    if origin in (Mapping, dict):
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _describe(value: Any) -> str:
    kind = {
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        list: "list",
        dict: "table",
    }.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, dict | list) else ""
    if isinstance(value, str):
        shown = f'"{value}"'
    if isinstance(value, bool):
        shown = "true" if value else "false"
    return f"{kind} {shown}".strip()


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, message: str) -> ConfigError:
        return ConfigError(
            f"{self.path}: {message}",
            untouched="nothing was done",
            hint="fix the file; deploy.toml in the repository explains every key",
            facts={"file": str(self.path)},
        )

    def convert(self, value: Any, tp: Any, key: str) -> Any:
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                return self.convert(value, args[0], key)
            # A scalar of several types (a JSON value in a check): the first that fits wins.
            for arg in args:
                try:
                    return self.convert(value, arg, key)
                except ConfigError:
                    continue
            expected = " or ".join(_type_name(a) for a in args)
            raise self.fail(f'"{key}" must be {expected}, got {_describe(value)}')
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise self.fail(f'"{key}" must be a table, got {_describe(value)}')
            return self.build(typing.cast("type[Any]", tp), value, key)
        if origin in (Mapping, dict):
            if not isinstance(value, dict):
                raise self.fail(f'"{key}" must be a table, got {_describe(value)}')
            _, value_type = typing.get_args(tp)
            return types.MappingProxyType(
                {k: self.convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
            )
        if origin is tuple:
            if not isinstance(value, list):
                raise self.fail(f'"{key}" must be {_type_name(tp)}, got {_describe(value)}')
            item_type = typing.get_args(tp)[0]
            return tuple(self.convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
        if tp is float:
            # TOML writes 100 and 100.0 differently; both are a number of milliseconds here.
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif isinstance(value, tp):
            return value
        raise self.fail(f'"{key}" must be {_type_name(tp)}, got {_describe(value)}')

    def build(self, cls: type[T], data: dict[str, Any], prefix: str) -> T:
        hints = typing.get_type_hints(cls)
        fields = {
            f.name: f
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if not f.metadata.get("derived")
        }
        for key in data:
            if key not in fields:
                where = f"{prefix}.{key}" if prefix else key
                raise self.fail(f'unknown key "{where}"{_suggest(key, list(fields))}')
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            where = f"{prefix}.{name}" if prefix else name
            if name not in data:
                no_default = f.default is dataclasses.MISSING
                if no_default and f.default_factory is dataclasses.MISSING:
                    raise self.fail(f'missing required key "{where}"')
                continue
            kwargs[name] = self.convert(data[name], hints[name], where)
        return cls(**kwargs)


def _validate(config: Config, loader: _Loader) -> None:
    """Checks on values, past their types, that would otherwise fail late and far away."""
    project = config.project
    if not project.compose_files:
        raise loader.fail('"project.compose_files" must name at least one Compose file')
    if not project.migration_command:
        raise loader.fail('"project.migration_command" must not be empty')
    if not config.environments:
        raise loader.fail("at least one [environments.NAME] table is required")
    projects: dict[str, str] = {}
    for name, env in config.environments.items():
        where = f"environments.{name}"
        if env.docker_host and not env.docker_host.startswith(_DOCKER_HOST_SCHEMES):
            raise loader.fail(
                f'"{where}.docker_host" must be empty (the local engine) or start with one of '
                f'{", ".join(_DOCKER_HOST_SCHEMES)}, got "{env.docker_host}"'
            )
        if not _COMPOSE_PROJECT_RE.match(env.compose_project):
            raise loader.fail(
                f'"{where}.compose_project" must be lowercase letters, digits, "-" or "_", '
                f'got "{env.compose_project}"'
            )
        if not env.base_url.startswith(("http://", "https://")):
            raise loader.fail(
                f'"{where}.base_url" must start with http:// or https://, got "{env.base_url}"'
            )
        for secret in env.secrets:
            if not _ENV_VAR_RE.match(secret):
                raise loader.fail(
                    f'"{where}.secrets" holds names of environment variables, got "{secret}"'
                )
        # Two environments on one engine with one Compose project would be one environment.
        same_engine_key = f"{env.docker_host}|{env.compose_project}"
        if same_engine_key in projects:
            raise loader.fail(
                f'"{where}.compose_project" is "{env.compose_project}" on the same engine as '
                f'environment "{projects[same_engine_key]}"; each environment needs its own'
            )
        projects[same_engine_key] = name
    for metric, value in dataclasses.asdict(config.thresholds).items():
        if value <= 0:
            raise loader.fail(f'"thresholds.{metric}" must be greater than 0, got {value}')
    kind, _, location = config.backups.store.partition(":")
    if kind not in ("volume", "dir") or not location:
        raise loader.fail(
            '"backups.store" must be "volume:NAME" (a named volume on the target engine) or '
            f'"dir:/absolute/path" (a directory on the target host), got "{config.backups.store}"'
        )
    if kind == "dir" and not location.startswith("/"):
        raise loader.fail(f'"backups.store" directory must be absolute, got "{location}"')
    deploy = config.deploy
    if min(deploy.health_timeout_s, deploy.migration_timeout_s, deploy.lock_ttl_s) <= 0:
        raise loader.fail('"deploy" timeouts and lock_ttl_s must be greater than 0')
    if deploy.keep_images < 1:
        raise loader.fail(f'"deploy.keep_images" must be at least 1, got {deploy.keep_images}')
    for name in (*deploy.migration_env, deploy.image_variable):
        if not _ENV_VAR_RE.match(name):
            raise loader.fail(f'"deploy.migration_env" keys are variable names, got "{name}"')
    for volume in config.backups.volumes:
        if not _COMPOSE_PROJECT_RE.match(volume):
            raise loader.fail(f'"backups.volumes" holds Compose volume names, got "{volume}"')
    copy_to = config.backups.copy_to
    valid_copy = (copy_to.startswith("dir:/") and len(copy_to) > 5) or (
        copy_to.startswith("s3://") and len(copy_to.removeprefix("s3://").strip("/")) > 0
    )
    if copy_to and not valid_copy:
        raise loader.fail(
            f'"backups.copy_to" must be "", "dir:/absolute/path" or "s3://bucket/prefix", '
            f'got "{copy_to}"'
        )
    key_env = config.backups.encryption_key_env
    if key_env and not _ENV_VAR_RE.match(key_env):
        raise loader.fail(
            f'"backups.encryption_key_env" must name an environment variable, got "{key_env}"'
        )
    if config.backups.retention < 1:
        raise loader.fail(f'"backups.retention" must be at least 1, got {config.backups.retention}')
    if not _ENV_VAR_RE.match(config.github.token_env):
        raise loader.fail(
            f'"github.token_env" must name an environment variable, got "{config.github.token_env}"'
        )
    if config.github.ci_wait_s < 0:
        raise loader.fail(f'"github.ci_wait_s" must be 0 or more, got {config.github.ci_wait_s}')
    if not _WORKFLOW_FILE_RE.match(config.github.ci_workflow):
        raise loader.fail(
            '"github.ci_workflow" must be "" or a workflow file name such as "ci.yml", '
            f'got "{config.github.ci_workflow}"'
        )
    notifications = config.notifications
    for key in ("slack_webhook_env", "status_page_hook_env"):
        if not _ENV_VAR_RE.match(getattr(notifications, key)):
            raise loader.fail(
                f'"notifications.{key}" must name an environment variable (the URL is a '
                f'secret), got "{getattr(notifications, key)}"'
            )
    if notifications.timeout_s <= 0:
        raise loader.fail('"notifications.timeout_s" must be greater than 0')
    _validate_checks(config.checks, loader)
    _validate_windows(config, loader)
    for i, tier in enumerate(config.contacts.tiers):
        if not tier.people or tier.after_min < 0:
            raise loader.fail(
                f'"contacts.tiers[{i}]" needs at least one of "people" and an after_min >= 0'
            )


def _validate_windows(config: Config, loader: _Loader) -> None:
    for name, table in config.windows.items():
        if name not in config.environments:
            raise loader.fail(
                f"[windows.{name}] names no environment" + _suggest(name, list(config.environments))
            )
        try:
            deploy_windows.parse(table)
        except ValueError as error:
            raise loader.fail(f'"windows.{name}": {error}') from None


_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _validate_checks(checks: ChecksConfig, loader: _Loader) -> None:
    """References between check tables (users, thresholds, suites) must resolve now, not mid-run."""
    thresholds = [f.name for f in dataclasses.fields(Thresholds)]
    users = list(checks.users)

    def suites(where: str, given: tuple[str, ...]) -> None:
        for suite in given:
            if suite not in CHECK_SUITES:
                raise loader.fail(
                    f'"{where}.suites" holds "{suite}"; suites are {", ".join(CHECK_SUITES)}'
                    + _suggest(suite, list(CHECK_SUITES))
                )

    def user(where: str, name: str) -> None:
        if name and name not in checks.users:
            known = ", ".join(users) or "none"
            raise loader.fail(
                f'"{where}" is "{name}", not a key of [checks.users] (known: {known})'
                + _suggest(name, users)
            )

    def threshold(where: str, name: str) -> None:
        if name and name not in thresholds:
            raise loader.fail(
                f'"{where}" is "{name}", not a key of [thresholds]' + _suggest(name, thresholds)
            )

    def method(where: str, name: str) -> None:
        if name not in _HTTP_METHODS:
            raise loader.fail(f'"{where}.method" must be one of {", ".join(_HTTP_METHODS)}')

    if checks.timeout_s <= 0:
        raise loader.fail(f'"checks.timeout_s" must be greater than 0, got {checks.timeout_s}')
    for name, u in checks.users.items():
        for key, var in (("username_env", u.username_env), ("password_env", u.password_env)):
            if not _ENV_VAR_RE.match(var):
                raise loader.fail(
                    f'"checks.users.{name}.{key}" must name an environment variable, got "{var}"'
                )
    user("checks.admin_user", checks.admin_user)
    for i, probe in enumerate(checks.probes):
        where = f"checks.probes[{i}]"
        user(f"{where}.user", probe.user)
        method(where, probe.method)
        threshold(f"{where}.budget", probe.budget)
        suites(where, probe.suites)
    for i, rbac in enumerate(checks.rbac):
        where = f"checks.rbac[{i}]"
        if not rbac.user:
            raise loader.fail(f'"{where}.user" must name a key of [checks.users]')
        user(f"{where}.user", rbac.user)
        method(where, rbac.method)
        suites(where, rbac.suites)
    for i, lat in enumerate(checks.latency):
        where = f"checks.latency[{i}]"
        user(f"{where}.user", lat.user)
        method(where, lat.method)
        threshold(f"{where}.threshold", lat.threshold)
        suites(where, lat.suites)
        if not 0 < lat.percentile < 100:
            raise loader.fail(f'"{where}.percentile" must be between 0 and 100')
        if lat.rate_per_s <= 0 or lat.duration_s <= 0 or lat.concurrency < 1:
            raise loader.fail(f'"{where}": rate_per_s, duration_s and concurrency must be positive')
    if checks.database is not None:
        suites("checks.database", checks.database.suites)
        suites("checks.database.revision", checks.database.revision_suites)
    if checks.logs is not None:
        suites("checks.logs", checks.logs.suites)
    if checks.flow is not None:
        suites("checks.flow", checks.flow.suites)
        if not checks.admin_user:
            raise loader.fail('[checks.flow] needs "checks.admin_user" (who creates the user)')
    for i, rule in enumerate(checks.metrics):
        where = f"checks.metrics[{i}]"
        threshold(f"{where}.threshold", rule.threshold)
        if rule.kind not in ("ratio", "quantile"):
            raise loader.fail(f'"{where}.kind" must be "ratio" or "quantile", got "{rule.kind}"')
        if not 0 < rule.quantile < 1:
            raise loader.fail(f'"{where}.quantile" must be between 0 and 1')
        for label, pattern in (*rule.match.items(), *rule.among.items()):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise loader.fail(
                    f'"{where}" label "{label}": bad regular expression: {exc}'
                ) from None
    mon = checks.monitor
    if mon.baseline_tolerance < 1:
        raise loader.fail(
            f'"checks.monitor.baseline_tolerance" must be at least 1, got {mon.baseline_tolerance}'
        )
    if mon.interval_s <= 0 or mon.consecutive_failures < 1 or mon.failure_limit < 1:
        raise loader.fail(
            '"checks.monitor": interval_s must be positive, consecutive_failures and '
            "failure_limit at least 1"
        )


def parse_config(text: str, path: Path) -> Config:
    """Build a Config from the text of a deploy.toml (`path` is used in messages and for
    resolving relative paths)."""
    loader = _Loader(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise loader.fail(f"not valid TOML: {exc}") from None
    config = loader.build(Config, data, "")
    # The table key is the environment's name; keep it on the object for messages.
    environments = {
        name: dataclasses.replace(env, name=name) for name, env in config.environments.items()
    }
    config = dataclasses.replace(
        config, environments=types.MappingProxyType(environments), path=path
    )
    _validate(config, loader)
    return config


def load_config(path: Path | str = DEFAULT_CONFIG_FILE) -> Config:
    """Read and validate `path`; raise ConfigError with one clear line when anything is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} not found",
            untouched="nothing was done",
            hint="run from the repository root or pass --config PATH",
            facts={"file": str(path)},
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration file {path}: {exc.strerror}",
            untouched="nothing was done",
            facts={"file": str(path)},
        ) from None
    return with_base_urls_from(parse_config(text, path), os.environ)


def base_url_variable(environment: str) -> str:
    """The environment variable that overrides `environment`'s base_url (production:
    DEPLOYTOOLS_PRODUCTION_BASE_URL); GitHub's workflows set it from the environment's
    `vars.BASE_URL`, so deploy.toml's value is for local runs."""
    return "DEPLOYTOOLS_" + re.sub(r"[^A-Z0-9]", "_", environment.upper()) + "_BASE_URL"


def with_base_urls_from(config: Config, environ: Mapping[str, str]) -> Config:
    """`config` with each environment's base_url from its variable, where set and not empty."""
    environments = dict(config.environments)
    for name, env in config.environments.items():
        variable = base_url_variable(name)
        url = environ.get(variable, "").strip()
        if not url:
            continue
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f'{variable} must start with http:// or https://, got "{url}"',
                untouched="nothing was done",
                hint=f"set {variable} to the URL where {name} answers, or unset it",
                facts={"variable": variable},
            )
        environments[name] = dataclasses.replace(env, base_url=url)
    return dataclasses.replace(config, environments=types.MappingProxyType(environments))


def masked(value: str | None) -> str:
    """How a secret appears in printed configuration: whether it is set, never its value."""
    return "(set, hidden)" if value else "(not set)"


def resolved_view(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The configuration as plain data for `config check`, with every secret masked."""
    environ = os.environ if environ is None else environ
    view: dict[str, Any] = {
        "file": str(config.path),
        "project": dataclasses.asdict(config.project),
        "environments": {},
        "thresholds": dataclasses.asdict(config.thresholds),
        "backups": dataclasses.asdict(config.backups),
        "github": {
            "repository": config.github.repository,
            "token_env": config.github.token_env,
            "token": masked(environ.get(config.github.token_env)),
        },
    }
    for name, env in config.environments.items():
        view["environments"][name] = {
            "docker_host": env.docker_host or "(local engine)",
            "compose_project": env.compose_project,
            "base_url": env.base_url,
            "requires_approval": env.requires_approval,
            "variables": dict(env.variables),
            "secrets": {s: masked(environ.get(s)) for s in env.secrets},
        }
    return view
