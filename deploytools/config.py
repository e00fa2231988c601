"""`deploy.toml` -> frozen dataclasses, validated eagerly and completely when loaded.

The annotated `deploy.toml` at the repository root is the configuration reference; the dataclasses
here are its schema. Loading walks the whole file once: an unknown key names itself, the file and
the nearest valid key; a wrong type names the expected one; a missing required key says which.
Nothing else in deploytools reads the file or checks these values again.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, Union

from deploytools import deploy_windows
from deploytools.commands import alembic
from deploytools.deploy_windows import WindowsConfig
from deploytools.errors import ConfigError
from deploytools.urls import docker_host_problem, url_problem, without_credentials
from deploytools.visible import visible

DEFAULT_CONFIG_FILE = "deploy.toml"
#: deploy.toml is read up to this size: a larger "file" (`--config /dev/zero`) is refused.
MAX_CONFIG_BYTES = 1024 * 1024
#: Arrays and tables nest at most this deep; the schema's deepest value is 5 levels down.
MAX_DEPTH = 16

# Every pattern is used with fullmatch: "$" would also match before a final newline.
_COMPOSE_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_ENV_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: An environment's name: ASCII only, so "prod" with a Cyrillic "o" is not a second "prod".
_ENVIRONMENT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
#: A Docker volume name (what `docker volume create` accepts).
_VOLUME_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: A Dockerfile build stage's name, a build arg's name and a build secret's id.
_STAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_BUILD_ARG_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_SECRET_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
#: A workflow file name under .github/workflows/ (GitHub also accepts the numeric workflow ID).
_WORKFLOW_FILE_RE = re.compile(r"|[A-Za-z0-9_.-]+\.ya?ml|[0-9]+")
#: Variables a Compose child (and ssh under it) depends on: an environment's `variables` or
#: `secrets` must not replace them, or a value in deploy.toml would decide which program runs,
#: which engine is used or where its credentials are read from.
_RESERVED_VARIABLES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "IFS", "PWD", "SSH_AUTH_SOCK"}
)
_RESERVED_PREFIXES = ("DOCKER_", "COMPOSE_", "LD_", "DYLD_", "PYTHON", "SSH_")
#: Host directories a backup store must never be (it is bind-mounted and chmod-ed as root):
#: these and everything under them.
_SYSTEM_DIRS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr", "/var/run", "/var/lib/docker", "/var/lib/containerd",
)  # fmt: skip
#: Host directories a backup store must not be itself (a subdirectory of them is fine).
_SHARED_DIRS = (
    "/", "/home", "/root", "/var", "/var/lib", "/opt", "/srv", "/mnt", "/media",
    "/tmp",  # noqa: S108 - named to be refused, not used
)  # fmt: skip


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


#: What an environment runs on: Compose on one engine, or a Docker Swarm cluster.
PLATFORMS = ("compose", "swarm")


@dataclass(frozen=True)
class SwarmSettings:
    """`[environments.NAME.swarm]`: how a Swarm environment's stack is deployed and reached."""

    #: A node's engine address, from its hostname or address in the swarm (`{hostname}`,
    #: `{addr}`): a task's container is reached on its node's engine (exec, logs).
    node_host: str = "ssh://{hostname}"
    #: The app service's replicas; 0 = the Compose file's deploy.replicas, or 1.
    replicas: int = 0
    update_parallelism: int = 1
    update_delay_s: float = 0.0
    update_monitor_s: float = 5.0
    stop_grace_period_s: float = 10.0
    #: Placement constraints by Compose service, added to the file's: the database's tasks on
    #: the node that holds its volume ({ db = ["node.labels.db == true"] }).
    placement: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class EnvironmentConfig:
    """One place the service runs: a Docker engine and a Compose project on it, or a Swarm
    cluster (reached through a manager's engine) and a stack on it."""

    compose_project: str
    base_url: str
    docker_host: str = ""
    requires_approval: bool = False
    variables: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    #: "compose" (one engine) or "swarm" (`docker_host` names a manager's engine).
    platform: str = "compose"
    #: Swarm settings; only a "swarm" environment may have the table (defaults when absent).
    swarm: SwarmSettings | None = None
    # Filled in from the table's key, never read from the file.
    name: str = field(default="", metadata={"derived": True})

    @property
    def is_local(self) -> bool:
        return self.docker_host == ""

    @property
    def is_swarm(self) -> bool:
        return self.platform == "swarm"

    @property
    def swarm_settings(self) -> SwarmSettings:
        """The Swarm settings of a swarm environment (the defaults when it has no table)."""
        return self.swarm or SwarmSettings()


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
    # After a rolling deploy, how long the previous release's container stays up (drained, no
    # traffic) so that a rollback is a proxy switch back to it: the watch after the release
    # (release.yml's `monitor --duration 1h`). 0 stops it at once, as before.
    watch_window_s: float = 3600.0
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
    # Alembic as the release image runs it, before its subcommand; () = project.migration_command
    # up to its "upgrade" word.
    alembic_command: tuple[str, ...] = ()
    # Variables the migration lint's container gets besides the placeholder DATABASE_URL: what
    # the service's env.py needs to render SQL offline. Placeholders, never secrets.
    lint_env: Mapping[str, str] = field(default_factory=dict)
    # How long the lint's Alembic may run in the image (each of `heads` and `upgrade --sql`).
    lint_timeout_s: float = 120.0

    def alembic_base(self, migration_command: tuple[str, ...]) -> list[str] | None:
        """Alembic as the image runs it (see deploytools.commands.alembic.base_command)."""
        return alembic.base_command(migration_command, self.alembic_command)


#: The build args `image build` sets itself (the OCI labels come from them): not configurable.
IMAGE_BUILD_ARGS = ("VERSION", "REVISION", "CREATED", "SOURCE")


@dataclass(frozen=True)
class ImageConfig:
    """How `image build` builds the release image from the source directory (the context)."""

    # The Dockerfile, relative to the source directory.
    dockerfile: str = "Dockerfile"
    # The stage of a multi-stage build to build ("" = the last one).
    target: str = ""
    # Build args beyond the four deploytools sets (IMAGE_BUILD_ARGS). Not secret.
    build_args: Mapping[str, str] = field(default_factory=dict)
    # BuildKit build secrets: the id the Dockerfile mounts (RUN --mount=type=secret,id=ID) ->
    # the environment variable holding its value. Never a build arg, never in a layer.
    secrets: Mapping[str, str] = field(default_factory=dict)


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


#: A value a check sends in a request body: a scalar or a list of scalars (roles = ["${role}"]).
BodyValue = str | bool | int | float | tuple[str | bool | int | float, ...]

#: How a test user authenticates ([checks.login] style).
LOGIN_STYLES = ("json", "form", "basic", "token")
#: How a request body is encoded (body_format of probes, RBAC checks, flow steps, provisioning).
BODY_FORMATS = ("json", "form")
#: Where the database check reads the migration revision from ([checks.database] revision_from).
REVISION_SOURCES = ("auto", "health", "database")


@dataclass(frozen=True)
class CheckUserSecrets:
    """The names of the environment variables holding one test user's secrets in one
    environment, when they differ from the user's own (staging and production apart)."""

    username_env: str = ""
    password_env: str = ""
    token_env: str = ""


@dataclass(frozen=True)
class CheckUser:
    """A test user of the checks; its credentials are read from environment variables."""

    username_env: str = ""
    password_env: str = ""
    # The role the user is created with when it does not exist yet ("" = never created).
    role: str = ""
    # A static token instead of a login (login style "token", or this user only).
    token_env: str = ""
    # Created through [checks.provision] when it cannot log in, even without a role.
    create: bool = False
    # Per environment, other variable names: [checks.users.NAME.environments.ENV].
    environments: Mapping[str, CheckUserSecrets] = field(default_factory=dict)

    def secrets_in(self, environment: str) -> CheckUserSecrets:
        """The variable names of this user's secrets in `environment`."""
        own = self.environments.get(environment, CheckUserSecrets())
        return CheckUserSecrets(
            own.username_env or self.username_env,
            own.password_env or self.password_env,
            own.token_env or self.token_env,
        )

    @property
    def provisioned(self) -> bool:
        """Whether the checks create this user when it cannot log in."""
        return self.create or bool(self.role)


@dataclass(frozen=True)
class LoginSettings:
    """How the checks obtain a token for a test user and send it.

    style "json": POST path {username_field, password_field, **extra} as JSON, token_field of the
    answer; "form": the same form-encoded, with grant_type=password (an OAuth2 password grant)
    unless extra sets it; "basic": no login, every request carries HTTP basic credentials;
    "token": no login, the user's token_env holds the token.
    """

    style: str = "json"
    path: str = "/auth/login"
    username_field: str = "username"
    password_field: str = "password"  # noqa: S105 - a JSON field name, not a password
    token_field: str = "access_token"  # noqa: S105 - a JSON field name, not a token
    extra: Mapping[str, JsonScalar] = field(default_factory=dict)
    expect_status: int = 200
    header: str = "Authorization"
    # "" = "Basic" for style "basic", else "Bearer"; "none" sends the token alone.
    scheme: str = ""

    @property
    def header_scheme(self) -> str:
        if self.scheme == "none":
            return ""
        return self.scheme or ("Basic" if self.style == "basic" else "Bearer")


@dataclass(frozen=True)
class ProvisionRequest:
    """How admin_user creates a missing test user. In body strings "${username}",
    "${password}" and "${role}" are replaced; a list item that becomes "" is left out."""

    enabled: bool = True
    method: str = "POST"
    path: str = ""  # "" = checks.users_path
    body: Mapping[str, BodyValue] = field(
        default_factory=lambda: {
            "username": "${username}",
            "password": "${password}",
            "roles": ("${role}",),
        }
    )
    body_format: str = "json"
    expect_status: int = 201


@dataclass(frozen=True)
class ProbeCheck:
    """One HTTP request and what its answer must be."""

    name: str
    path: str
    method: str = "GET"
    user: str = ""
    body: Mapping[str, BodyValue] = field(default_factory=dict)
    body_format: str = "json"
    expect_status: int = 200
    expect_json: Mapping[str, JsonScalar] = field(default_factory=dict)
    expect_fields: tuple[str, ...] = ()
    # The whole body, when it is a bare JSON scalar (a health route answering `true`) or text.
    expect_body: JsonScalar | None = None
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
    body: Mapping[str, BodyValue] = field(default_factory=dict)
    body_format: str = "json"
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
    """The database as the service's health endpoint reports it, and its migration revision
    from there or from the database itself (alembic_version, through the database service)."""

    path: str = "/health"
    reachable_field: str = "database.reachable"
    round_trip_field: str = "database.round_trip_ms"
    revision_field: str = "database.alembic_revision"
    revision_from: str = "auto"
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


#: The flow step user that stands for the flow's own new user (a fresh name and password).
FLOW_USER = "flow"


@dataclass(frozen=True)
class FlowStep:
    """One request of validate's flow: as `user`, `method path` must answer `expect_status`.
    "${flow.username}", "${flow.password}" and captured "${NAME}" are filled in path and body."""

    name: str
    path: str
    user: str = ""  # a key of [checks.users], "flow" (the new user), "" (no token)
    method: str = "GET"
    body: Mapping[str, BodyValue] = field(default_factory=dict)
    body_format: str = "json"
    expect_status: int = 200
    # Values for later steps: NAME -> dotted field of this answer.
    capture: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UserFlow:
    """validate's end-to-end flow: `steps` as given, or (no steps) the role flow: create a
    user, assign a role, allowed, revoke, denied."""

    role: str = ""
    resource: str = ""
    users_path: str = "/users"
    assign_path: str = "/users/{id}/roles"
    revoke_path: str = "/users/{id}/roles/{role}"
    username_prefix: str = "deploytools-flow-"
    username_suffix: str = ""
    steps: tuple[FlowStep, ...] = ()
    suites: tuple[str, ...] = ("validate",)

    def resolved_steps(self, admin: str) -> tuple[FlowStep, ...]:
        """The steps to run: the configured ones, or those of the role flow run by `admin`."""
        if self.steps:
            return self.steps
        path = self.assign_path.replace("{id}", "${id}").replace("{role}", self.role)
        revoke = self.revoke_path.replace("{id}", "${id}").replace("{role}", self.role)
        new_user: dict[str, BodyValue] = {
            "username": "${flow.username}",
            "password": "${flow.password}",
            "roles": (),
        }
        return (
            FlowStep(
                "admin creates user ${flow.username}",
                self.users_path,
                user=admin,
                method="POST",
                body=new_user,
                expect_status=201,
                capture={"id": "id"},
            ),
            FlowStep(
                f"without a role: GET {self.resource} denied",
                self.resource,
                FLOW_USER,
                expect_status=403,
            ),
            FlowStep(f"admin assigns role {self.role}", path, admin, "POST", {"role": self.role}),
            FlowStep(f"with {self.role}: GET {self.resource} allowed", self.resource, FLOW_USER),
            FlowStep(f"admin revokes role {self.role}", revoke, admin, "DELETE"),
            FlowStep(
                f"after revoke: GET {self.resource} denied",
                self.resource,
                FLOW_USER,
                expect_status=403,
            ),
        )


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
    provision: ProvisionRequest = field(default_factory=ProvisionRequest)
    database: DatabaseCheck | None = None
    probes: tuple[ProbeCheck, ...] = ()
    rbac: tuple[RbacCheck, ...] = ()
    latency: tuple[LatencyCheck, ...] = ()
    logs: LogScan | None = None
    flow: UserFlow | None = None
    metrics: tuple[MetricRule, ...] = ()
    monitor: MonitorSettings = field(default_factory=MonitorSettings)


# -- The proxy: deploytools' own HAProxy in front of the app (docs/zero-downtime.md) --------


@dataclass(frozen=True)
class ProxyConfig:
    """The reverse proxy that switches traffic between app containers, and how deploytools
    tells that an app container answers. Every key has a default read from the Compose file
    (deploytools.proxy_settings), so most services set none."""

    # The HAProxy image of deploytools' own proxy container. "" = $PROXY_IMAGE, else haproxy:2.8.
    image: str = ""
    # The port the app listens on inside the project network. 0 = the app service's `expose`,
    # its `ports` target or its healthcheck's URL in the Compose file, else 8080.
    app_port: int = 0
    # The app's health route. "" = the path of the app service's healthcheck, else /health.
    health_path: str = ""
    # The status the health route answers with when the app is up.
    health_status: int = 200
    # What its body must be: a table of dotted JSON fields and their values, or one scalar the
    # whole JSON body must equal (`true`). Unset = the status alone, except with no health
    # route anywhere (today's default /health) = { status = "ok" }.
    health_expect: JsonScalar | Mapping[str, JsonScalar] | None = None
    # A Compose service the files may define as the proxy (docker-compose.prod.yml's): used
    # when defined, else deploytools runs its own proxy container. "" = always its own.
    compose_service: str = "proxy"
    # Where deploytools' own proxy publishes, by environment: "PORT" or "ADDRESS:PORT".
    # An environment not named = the port of its base_url (80 when the URL names none).
    ports: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    project: ProjectConfig
    environments: Mapping[str, EnvironmentConfig]
    thresholds: Thresholds = field(default_factory=Thresholds)
    backups: BackupConfig = field(default_factory=BackupConfig)
    github: GitHubConfig = field(default_factory=GitHubConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    windows: Mapping[str, WindowsConfig] = field(default_factory=dict)
    contacts: ContactsConfig = field(default_factory=ContactsConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
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


@dataclass(frozen=True)
class Range:
    """The values a number of deploy.toml may take (both ends included unless said open)."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def describe(self) -> str:
        low = f"greater than {_num(self.low)}" if self.low_open else f"at least {_num(self.low)}"
        high = f"less than {_num(self.high)}" if self.high_open else f"at most {_num(self.high)}"
        return f"{low} and {high}"


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else f"{value:g}"


_POSITIVE_MS = Range(0, 3_600_000, low_open=True)  # up to an hour
_PERCENT = Range(0, 100, low_open=True)
_TIMEOUT_S = Range(0, 86_400, low_open=True)  # up to a day
_REQUEST_TIMEOUT_S = Range(0, 3_600, low_open=True)
_HTTP_STATUS = Range(100, 599)
_COUNT = Range(1, 10_000)

#: The range of every number in deploy.toml, by table: the reference for "documented range".
#: `config check` names the range of a value outside it; a unit test fails when a number of the
#: schema has none.
NUMBER_RANGES: dict[type, dict[str, Range]] = {
    Thresholds: {
        "health_ms": _POSITIVE_MS,
        "api_p95_ms": _POSITIVE_MS,
        "error_rate_percent": _PERCENT,
        "permission_check_ms": _POSITIVE_MS,
        "auth_success_percent": _PERCENT,
        "database_latency_ms": _POSITIVE_MS,
        # docker stats counts 100 per core.
        "cpu_percent": Range(0, 100_000, low_open=True),
        "memory_mb": Range(0, 16_777_216, low_open=True),  # 16 TiB
    },
    BackupConfig: {"retention": _COUNT},
    GitHubConfig: {"ci_wait_s": Range(0, 86_400)},
    NotificationsConfig: {"timeout_s": _REQUEST_TIMEOUT_S},
    DeployConfig: {
        "health_timeout_s": _TIMEOUT_S,
        "migration_timeout_s": _TIMEOUT_S,
        "lock_ttl_s": Range(1, 604_800),  # a week
        "keep_images": Range(1, 1_000),
        "watch_window_s": Range(0, 604_800),  # a week
    },
    ReleaseConfig: {"lint_timeout_s": Range(0, 3_600, low_open=True)},
    ContactTier: {"after_min": Range(0, 10_080)},  # a week
    ChecksConfig: {"timeout_s": _REQUEST_TIMEOUT_S},
    ProbeCheck: {"expect_status": _HTTP_STATUS, "budget_ms": Range(0, 3_600_000)},
    RbacCheck: {"expect_status": _HTTP_STATUS},
    LoginSettings: {"expect_status": _HTTP_STATUS},
    ProvisionRequest: {"expect_status": _HTTP_STATUS},
    FlowStep: {"expect_status": _HTTP_STATUS},
    LatencyCheck: {
        "expect_status": _HTTP_STATUS,
        "rate_per_s": Range(0, 10_000, low_open=True),
        "duration_s": _TIMEOUT_S,
        "percentile": Range(0, 100, low_open=True, high_open=True),
        "min_samples": Range(1, 100_000_000),
        "concurrency": Range(1, 1_024),
    },
    MetricRule: {
        "quantile": Range(0, 1, low_open=True, high_open=True),
        "scale": Range(0, 1e12, low_open=True),
        "min_count": Range(0, 1e12),
    },
    MonitorSettings: {
        "interval_s": _TIMEOUT_S,
        "consecutive_failures": _COUNT,
        "failure_limit": _COUNT,
        "baseline_tolerance": Range(1, 1_000),
    },
    ProxyConfig: {"app_port": Range(0, 65_535), "health_status": _HTTP_STATUS},
    SwarmSettings: {
        "replicas": Range(0, 1_000),
        "update_parallelism": Range(1, 1_000),
        "update_delay_s": Range(0, 3_600),
        "update_monitor_s": Range(0, 3_600),
        "stop_grace_period_s": Range(0, 3_600),
    },
}


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
        # Values from the file are quoted in messages; a newline or a BOM among them is shown
        # escaped, so the message stays one line and says what is there.
        return ConfigError(
            visible(f"{self.path}: {message}"),
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
                # nan passes every comparison as false and inf every "less than": either would
                # quietly turn a check or a deadline off, and neither is JSON.
                if not math.isfinite(value):
                    raise self.fail(f'"{key}" must be a finite number, got {value}')
                return float(value)
        elif tp is str:
            if isinstance(value, str):
                if "\x00" in value:
                    raise self.fail(f'"{key}" must not contain a NUL character')
                return value
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
    _validate_numbers(config, "", loader)
    projects: dict[str, str] = {}
    for name, env in config.environments.items():
        where = f"environments.{name}"
        if not _ENVIRONMENT_NAME_RE.fullmatch(name):
            raise loader.fail(
                f'[environments.{name}]: an environment name is ASCII letters, digits, "-" and '
                '"_" (at most 63), starting with a letter or digit'
            )
        if env.docker_host:
            problem = docker_host_problem(env.docker_host)
            if problem and problem.startswith("must start with"):
                problem = "must be empty (the local engine) or " + problem.removeprefix("must ")
            if problem:
                raise loader.fail(
                    f'"{where}.docker_host" {problem}, got "{without_credentials(env.docker_host)}"'
                )
        if not _COMPOSE_PROJECT_RE.fullmatch(env.compose_project):
            raise loader.fail(
                f'"{where}.compose_project" must be lowercase letters, digits, "-" or "_", '
                f'got "{env.compose_project}"'
            )
        _check_url(loader, f"{where}.base_url", env.base_url)
        for secret in env.secrets:
            if not _ENV_VAR_RE.fullmatch(secret):
                raise loader.fail(
                    f'"{where}.secrets" holds names of environment variables, got "{secret}"'
                )
            _check_not_reserved(loader, f"{where}.secrets", secret)
        for variable in env.variables:
            if not _ENV_VAR_RE.fullmatch(variable):
                raise loader.fail(
                    f'"{where}.variables" keys are variable names (letters, digits, "_", not '
                    f'starting with a digit), got "{variable}"'
                )
            _check_not_reserved(loader, f"{where}.variables", variable)
        _validate_platform(env, where, loader)
        # Two environments on one engine with one Compose project would be one environment.
        same_engine_key = f"{env.docker_host}|{env.compose_project}"
        if same_engine_key in projects:
            raise loader.fail(
                f'"{where}.compose_project" is "{env.compose_project}" on the same engine as '
                f'environment "{projects[same_engine_key]}"; each environment needs its own'
            )
        projects[same_engine_key] = name
    kind, _, location = config.backups.store.partition(":")
    if kind not in ("volume", "dir") or not location:
        raise loader.fail(
            '"backups.store" must be "volume:NAME" (a named volume on the target engine) or '
            f'"dir:/absolute/path" (a directory on the target host), got "{config.backups.store}"'
        )
    if kind == "dir":
        _check_store_dir(loader, "backups.store", location)
    if kind == "volume" and not _VOLUME_NAME_RE.fullmatch(location):
        raise loader.fail(
            '"backups.store" volume name must be letters, digits, "_", "." and "-", starting '
            f'with a letter or digit, got "{location}"'
        )
    deploy = config.deploy
    for name in (*deploy.migration_env, deploy.image_variable):
        if not _ENV_VAR_RE.fullmatch(name):
            raise loader.fail(f'"deploy.migration_env" keys are variable names, got "{name}"')
    for volume in config.backups.volumes:
        if not _COMPOSE_PROJECT_RE.fullmatch(volume):
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
    if copy_to.startswith("dir:"):
        _check_store_dir(loader, "backups.copy_to", copy_to.removeprefix("dir:"))
    if copy_to.startswith("s3://"):
        problem = url_problem(copy_to, schemes=("s3",))
        if problem and "query" not in problem:
            raise loader.fail(f'"backups.copy_to" {problem}')
    if config.backups.s3_endpoint_url:
        _check_url(loader, "backups.s3_endpoint_url", config.backups.s3_endpoint_url)
    key_env = config.backups.encryption_key_env
    if key_env and not _ENV_VAR_RE.fullmatch(key_env):
        raise loader.fail(
            f'"backups.encryption_key_env" must name an environment variable, got "{key_env}"'
        )
    if not _ENV_VAR_RE.fullmatch(config.github.token_env):
        raise loader.fail(
            f'"github.token_env" must name an environment variable, got "{config.github.token_env}"'
        )
    _check_url(loader, "github.api_url", config.github.api_url)
    if not _WORKFLOW_FILE_RE.fullmatch(config.github.ci_workflow):
        raise loader.fail(
            '"github.ci_workflow" must be "" or a workflow file name such as "ci.yml", '
            f'got "{config.github.ci_workflow}"'
        )
    notifications = config.notifications
    for key in ("slack_webhook_env", "status_page_hook_env"):
        if not _ENV_VAR_RE.fullmatch(getattr(notifications, key)):
            raise loader.fail(
                f'"notifications.{key}" must name an environment variable (the URL is a '
                f'secret), got "{getattr(notifications, key)}"'
            )
    _validate_checks(config.checks, loader, list(config.environments))
    _validate_windows(config, loader)
    _validate_proxy(config, loader)
    for i, tier in enumerate(config.contacts.tiers):
        if not tier.people:
            raise loader.fail(
                f'"contacts.tiers[{i}]" needs at least one of "people" and an after_min >= 0'
            )
    if config.contacts.status_page:
        _check_url(loader, "contacts.status_page", config.contacts.status_page)
    if not _relative_inside(config.release.alembic_ini):
        raise loader.fail(
            '"release.alembic_ini" must be a path relative to the service\'s source directory, '
            f'inside the repository, got "{config.release.alembic_ini}"'
        )
    for name in config.release.lint_env:
        if not _ENV_VAR_RE.fullmatch(name):
            raise loader.fail(f'"release.lint_env" keys are variable names, got "{name}"')
    _validate_image(config.image, loader)


#: What a swarm environment's `node_host` may name of a node.
_NODE_HOST_FIELDS = ("hostname", "addr")
_NODE_HOST_FIELD_RE = re.compile(r"\{([^{}]*)\}")


def _validate_platform(env: EnvironmentConfig, where: str, loader: _Loader) -> None:
    """`platform` is one of PLATFORMS; the [swarm] table belongs to a swarm environment, and
    its node_host template names only what a node has and is an engine address once filled."""
    if env.platform not in PLATFORMS:
        raise loader.fail(
            f'"{where}.platform" must be one of {", ".join(PLATFORMS)}, got "{env.platform}"'
            + _suggest(env.platform, list(PLATFORMS))
        )
    if env.swarm is not None and not env.is_swarm:
        raise loader.fail(
            f'[{where}.swarm] is only for a Swarm environment: set "{where}.platform" to '
            '"swarm", or remove the table'
        )
    if not env.is_swarm:
        return
    template = env.swarm_settings.node_host
    names = _NODE_HOST_FIELD_RE.findall(template)
    for name in names:
        if name not in _NODE_HOST_FIELDS:
            raise loader.fail(
                f'"{where}.swarm.node_host" may name {{hostname}} and {{addr}}, got "{{{name}}}"'
            )
    for service, constraints in env.swarm_settings.placement.items():
        if not constraints or any(not c.strip() for c in constraints):
            raise loader.fail(
                f'"{where}.swarm.placement.{service}" must list constraints such as '
                '"node.hostname == db-1"'
            )
    filled = node_host_for(template, hostname="node", addr="10.0.0.1")
    if not names or "{" in filled or "}" in filled or docker_host_problem(filled):
        raise loader.fail(
            f'"{where}.swarm.node_host" must be a Docker engine address with {{hostname}} or '
            f'{{addr}} ("ssh://{{hostname}}", "tcp://{{addr}}:2375"), got "{template}"'
        )


def node_host_for(template: str, *, hostname: str, addr: str) -> str:
    """A node's engine address from a swarm environment's `node_host` template."""
    return template.replace("{hostname}", hostname).replace("{addr}", addr)


def _relative_inside(path: str) -> bool:
    """A relative POSIX path that stays inside the directory it is relative to."""
    pure = PurePosixPath(path)
    return bool(path) and not pure.is_absolute() and ".." not in pure.parts and "\\" not in path


def _validate_image(image: ImageConfig, loader: _Loader) -> None:
    if not _relative_inside(image.dockerfile):
        raise loader.fail(
            '"image.dockerfile" must be a path relative to the service\'s source directory, '
            f'inside it, got "{image.dockerfile}"'
        )
    if image.target and not _STAGE_RE.fullmatch(image.target):
        raise loader.fail(
            '"image.target" must be a build stage\'s name (letters, digits, "_", "." and "-"), '
            f'got "{image.target}"'
        )
    for name, value in image.build_args.items():
        if not _BUILD_ARG_RE.fullmatch(name):
            raise loader.fail(
                f'"image.build_args" keys are ARG names (letters, digits, "_"), got "{name}"'
            )
        if name in IMAGE_BUILD_ARGS:
            raise loader.fail(
                f'"image.build_args.{name}" is set by deploytools itself (the OCI labels come '
                f"from {', '.join(IMAGE_BUILD_ARGS)}); remove it"
            )
        if "\n" in value:
            raise loader.fail(f'"image.build_args.{name}" must be one line')
    for secret_id, variable in image.secrets.items():
        if not _SECRET_ID_RE.fullmatch(secret_id):
            raise loader.fail(
                '"image.secrets" keys are build secret ids (letters, digits, "_", "." and '
                f'"-"), got "{secret_id}"'
            )
        if not _ENV_VAR_RE.fullmatch(variable):
            raise loader.fail(
                f'"image.secrets.{secret_id}" names the environment variable holding the '
                f'secret, got "{variable}"'
            )
        _check_not_reserved(loader, f"image.secrets.{secret_id}", variable)


def _validate_numbers(value: Any, where: str, loader: _Loader) -> None:
    """Every number of the configuration inside its range (NUMBER_RANGES)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        ranges = NUMBER_RANGES.get(type(value), {})
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            key = f"{where}.{f.name}" if where else f.name
            if isinstance(item, int | float) and not isinstance(item, bool) and f.name in ranges:
                allowed = ranges[f.name]
                if not allowed.holds(item):
                    raise loader.fail(f'"{key}" must be {allowed.describe()}, got {item}')
            _validate_numbers(item, key, loader)
    elif isinstance(value, Mapping):
        for name, item in value.items():
            _validate_numbers(item, f"{where}.{name}", loader)
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            _validate_numbers(item, f"{where}[{i}]", loader)


def _check_url(loader: _Loader, where: str, url: str) -> None:
    problem = url_problem(url)
    if problem:
        # The URL is shown without its credentials: they must never reach a log.
        raise loader.fail(f'"{where}" {problem}, got "{without_credentials(url)}"')


def _check_not_reserved(loader: _Loader, where: str, name: str) -> None:
    if name in _RESERVED_VARIABLES or name.startswith(_RESERVED_PREFIXES):
        raise loader.fail(
            f'"{where}" must not set {name}: it would replace what Compose and ssh run with '
            f"(reserved: {', '.join(sorted(_RESERVED_VARIABLES))} and names starting with "
            f"{', '.join(_RESERVED_PREFIXES)})"
        )


def _check_store_dir(loader: _Loader, where: str, location: str) -> None:
    """A backup directory: absolute, normalised, and not a system or shared directory."""
    segments = location.split("/")
    if not location.startswith("/") or "." in segments or ".." in segments:
        raise loader.fail(
            f'"{where}" directory must be an absolute path without "." or "..", got "{location}"'
        )
    normal = "/" + "/".join(s for s in segments if s)
    system = [d for d in _SYSTEM_DIRS if normal == d or normal.startswith(d + "/")]
    if normal in _SHARED_DIRS or system:
        raise loader.fail(
            f'"{where}" must not be "{normal}": a system or shared directory (the store helper '
            "takes it over as root); use a directory of its own, such as /srv/deploytools-backups"
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


_PROXY_PORT_RE = re.compile(r"(?:([0-9.]+|\[[0-9a-fA-F:]+\]):)?([0-9]{1,5})")
_PROXY_SERVICE_RE = re.compile(r"|[A-Za-z0-9][A-Za-z0-9_.-]*")


def proxy_publish(value: str) -> tuple[str, int] | None:
    """A [proxy.ports] value ("8080", "127.0.0.1:8080") as (host address, port); None when it
    is neither. The address "" publishes on every interface."""
    match = _PROXY_PORT_RE.fullmatch(value)
    if match is None or not 1 <= int(match.group(2)) <= 65_535:
        return None
    return (match.group(1) or "").strip("[]"), int(match.group(2))


def _validate_proxy(config: Config, loader: _Loader) -> None:
    proxy = config.proxy
    path = proxy.health_path
    if path and (not path.startswith("/") or any(c.isspace() for c in path)):
        raise loader.fail(f'"proxy.health_path" must be a path starting with "/", got "{path}"')
    if not _PROXY_SERVICE_RE.fullmatch(proxy.compose_service):
        raise loader.fail(
            f'"proxy.compose_service" must be "" or a Compose service name, '
            f'got "{proxy.compose_service}"'
        )
    if any(c.isspace() for c in proxy.image):
        raise loader.fail(f'"proxy.image" must be an image reference, got "{proxy.image}"')
    for name, value in proxy.ports.items():
        if name not in config.environments:
            raise loader.fail(
                f'"proxy.ports.{name}" names no environment'
                + _suggest(name, list(config.environments))
            )
        if proxy_publish(value) is None:
            raise loader.fail(
                f'"proxy.ports.{name}" must be "PORT" or "ADDRESS:PORT" (a port from 1 to '
                f'65535), got "{value}"'
            )


_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


#: An HTTP header's name (RFC 9110 token characters).
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
#: A value captured by a flow step, used as "${NAME}" later: an identifier, as a variable's name.
_CAPTURE_NAME_RE = _ENV_VAR_RE


def _validate_checks(checks: ChecksConfig, loader: _Loader, environments: list[str]) -> None:
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

    def one_of(where: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise loader.fail(
                f'"{where}" must be one of {", ".join(allowed)}, got "{value}"'
                + _suggest(value, list(allowed))
            )

    login = checks.login
    one_of("checks.login.style", login.style, LOGIN_STYLES)
    if not _HEADER_NAME_RE.fullmatch(login.header):
        raise loader.fail(
            f'"checks.login.header" must be an HTTP header name, got "{login.header}"'
        )
    if login.style in ("json", "form") and not login.path.startswith("/"):
        raise loader.fail(f'"checks.login.path" must start with "/", got "{login.path}"')
    for name, u in checks.users.items():
        for env_name, names in (("", u), *u.environments.items()):
            where = f"checks.users.{name}" + (f".environments.{env_name}" if env_name else "")
            if env_name and env_name not in environments:
                raise loader.fail(
                    f'"{where}": "{env_name}" is not a key of [environments] '
                    f"(known: {', '.join(environments)})" + _suggest(env_name, environments)
                )
            for key in ("username_env", "password_env", "token_env"):
                var = getattr(names, key)
                if var and not _ENV_VAR_RE.fullmatch(var):
                    raise loader.fail(
                        f'"{where}.{key}" must name an environment variable, got "{var}"'
                    )
        for env_name in environments or [""]:
            names = u.secrets_in(env_name)
            shown = f" in environment {env_name}" if env_name in u.environments else ""
            if login.style == "token" or names.token_env:
                if not names.token_env:
                    raise loader.fail(
                        f'"checks.users.{name}" needs "token_env"{shown}: [checks.login] '
                        'style is "token"'
                    )
            elif not (names.username_env and names.password_env):
                raise loader.fail(
                    f'"checks.users.{name}" needs "username_env" and "password_env"{shown} '
                    '(or "token_env" for a static token)'
                )
    user("checks.admin_user", checks.admin_user)
    provision = checks.provision
    one_of("checks.provision.body_format", provision.body_format, BODY_FORMATS)
    method("checks.provision", provision.method)
    creates = [n for n, u in checks.users.items() if u.create]
    if provision.enabled and creates and not checks.admin_user:
        raise loader.fail(
            f'"checks.users.{creates[0]}.create" is true: creating a missing user needs '
            '"checks.admin_user" (who creates it)'
        )
    for i, probe in enumerate(checks.probes):
        where = f"checks.probes[{i}]"
        user(f"{where}.user", probe.user)
        method(where, probe.method)
        one_of(f"{where}.body_format", probe.body_format, BODY_FORMATS)
        if probe.expect_body is not None and (probe.expect_json or probe.expect_fields):
            raise loader.fail(
                f'"{where}.expect_body" is the whole body: it cannot go with expect_json or '
                "expect_fields (fields of an object)"
            )
        threshold(f"{where}.budget", probe.budget)
        suites(where, probe.suites)
    for i, rbac in enumerate(checks.rbac):
        where = f"checks.rbac[{i}]"
        if not rbac.user:
            raise loader.fail(f'"{where}.user" must name a key of [checks.users]')
        user(f"{where}.user", rbac.user)
        method(where, rbac.method)
        one_of(f"{where}.body_format", rbac.body_format, BODY_FORMATS)
        suites(where, rbac.suites)
    for i, lat in enumerate(checks.latency):
        where = f"checks.latency[{i}]"
        user(f"{where}.user", lat.user)
        method(where, lat.method)
        threshold(f"{where}.threshold", lat.threshold)
        suites(where, lat.suites)
    if checks.database is not None:
        one_of("checks.database.revision_from", checks.database.revision_from, REVISION_SOURCES)
        suites("checks.database", checks.database.suites)
        suites("checks.database.revision", checks.database.revision_suites)
    if checks.logs is not None:
        suites("checks.logs", checks.logs.suites)
    if checks.flow is not None:
        flow = checks.flow
        suites("checks.flow", flow.suites)
        if not flow.steps:
            if not (flow.role and flow.resource):
                raise loader.fail(
                    '[checks.flow] needs "role" and "resource" (the role flow), or '
                    "[[checks.flow.steps]] (a flow of your own)"
                )
            if not checks.admin_user:
                raise loader.fail('[checks.flow] needs "checks.admin_user" (who creates the user)')
        flow_users = [*users, FLOW_USER]
        for i, step in enumerate(flow.steps):
            where = f"checks.flow.steps[{i}]"
            if step.user and step.user not in flow_users:
                raise loader.fail(
                    f'"{where}.user" is "{step.user}", not a key of [checks.users] nor '
                    f'"{FLOW_USER}" (the flow\'s new user)' + _suggest(step.user, flow_users)
                )
            method(where, step.method)
            one_of(f"{where}.body_format", step.body_format, BODY_FORMATS)
            if not step.path.startswith("/"):
                raise loader.fail(f'"{where}.path" must start with "/", got "{step.path}"')
            for var in step.capture:
                if not _CAPTURE_NAME_RE.fullmatch(var):
                    raise loader.fail(
                        f'"{where}.capture" keys are names (letters, digits, "_"), got "{var}"'
                    )
    for i, rule in enumerate(checks.metrics):
        where = f"checks.metrics[{i}]"
        threshold(f"{where}.threshold", rule.threshold)
        if rule.kind not in ("ratio", "quantile"):
            raise loader.fail(f'"{where}.kind" must be "ratio" or "quantile", got "{rule.kind}"')
        for label, pattern in (*rule.match.items(), *rule.among.items()):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise loader.fail(
                    f'"{where}" label "{label}": bad regular expression: {exc}'
                ) from None


def parse_config(text: str, path: Path) -> Config:
    """Build a Config from the text of a deploy.toml (`path` is used in messages and for
    resolving relative paths)."""
    loader = _Loader(path)
    if text.startswith("\ufeff"):
        raise loader.fail(
            "starts with a byte-order mark (BOM, U+FEFF): save it as UTF-8 without a BOM"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise loader.fail(f"not valid TOML: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise loader.fail(f"arrays or tables nested too deep (more than {MAX_DEPTH})") from None
    if _depth(data) > MAX_DEPTH:
        raise loader.fail(f"arrays or tables nested too deep (more than {MAX_DEPTH})")
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
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
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
    return with_base_urls_from(parse_config(_decode(raw, _Loader(path)), path), os.environ)


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
        problem = url_problem(url)
        if problem:
            raise ConfigError(
                f'{variable} {problem}, got "{without_credentials(visible(url))}"',
                untouched="nothing was done",
                hint=f"set {variable} to the URL where {name} answers, or unset it",
                facts={"variable": variable},
            )
        environments[name] = dataclasses.replace(env, base_url=url)
    return dataclasses.replace(config, environments=types.MappingProxyType(environments))


def _decode(raw: bytes, loader: _Loader) -> str:
    """The text of deploy.toml: strict UTF-8, anything else named for what it is."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise loader.fail(f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a deploy.toml")
    if raw.startswith(b"\xef\xbb\xbf"):
        raise loader.fail(
            "starts with a byte-order mark (BOM, U+FEFF): save it as UTF-8 without a BOM"
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise loader.fail("is UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8")
    if b"\x00" in raw:
        raise loader.fail(
            "is not text: it holds NUL bytes (a binary file, or UTF-16/UTF-32 text); "
            "save it as UTF-8"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise loader.fail(
            f"is not valid UTF-8 (byte 0x{raw[exc.start]:02x} on line {line}): save it as UTF-8"
        ) from None


def _depth(data: Any) -> int:
    """How deep arrays and tables nest in parsed TOML, counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return deepest


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
        "image": {
            "dockerfile": config.image.dockerfile,
            "target": config.image.target or "(the last stage)",
            "build_args": dict(config.image.build_args),
            "secrets": {
                k: f"{v} {masked(environ.get(v))}" for k, v in config.image.secrets.items()
            },
        },
    }
    for name, env in config.environments.items():
        view["environments"][name] = {
            "docker_host": without_credentials(env.docker_host) or "(local engine)",
            "compose_project": env.compose_project,
            # Refused with credentials when loaded; masked here all the same.
            "base_url": without_credentials(env.base_url),
            "requires_approval": env.requires_approval,
            "variables": dict(env.variables),
            "secrets": {s: masked(environ.get(s)) for s in env.secrets},
            "platform": env.platform,
        }
        if env.is_swarm:
            view["environments"][name]["swarm"] = dataclasses.asdict(env.swarm_settings)
    return view
