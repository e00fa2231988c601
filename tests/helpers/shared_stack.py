"""Helpers shared by the integration tests that run on one stack of docker-compose.prod.yml
for the whole session (Docker prefix dtdep-): deploy, rollback, rolling, backup, the runbook's
rest, the reference service, checks and monitor.

They take turns on it (SharedStack, the `dtdep_stack` fixture of tests/integration/conftest.py),
reset before each module to 1.15.1 or 1.15.2 as first set up. A module's `env` fixture is
`module_env(NAME, **deploy_toml_options)`: the stack at 1.15.1 with a deploy.toml for it in a
temporary directory and a store volume of its own, removed (with helper containers) at the
module's end, failures included. Image variants (ImageVariants, the `image_variants` fixture)
are built once per session.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.config import Config, load_config
from deploytools.context import StepContext
from deploytools.session import open_environment
from tests.helpers.stacks import COMPOSE_FILE, ComposeStack, free_port

IMAGE_REPOSITORY = "rbac-api-test"


def stack_env(postgres_image: str, app_image: str) -> dict[str, str]:
    return {
        "POSTGRES_IMAGE": postgres_image,
        "APP_IMAGE": app_image,
        "APP_PORT": str(free_port()),
        "POSTGRES_USER": "rbac",
        "POSTGRES_DB": "rbac",
        "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
        "APP_SECRET_KEY": secrets.token_urlsafe(32),
    }


def _toml_table(values: dict[str, str]) -> str:
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in sorted(values.items())) + " }"


def write_config(
    path: Path,
    stacks: dict[str, ComposeStack],
    *,
    store: str,
    retention: int = 10,
    health_timeout_s: float = 60.0,
    migration_command: str = '["alembic", "-c", "/app/alembic.ini", "upgrade", "head"]',
    watch_window_s: float | None = None,
    extra: str = "",
) -> Config:
    """A deploy.toml with one environment per stack; the stack's variables (minus APP_IMAGE,
    which deploytools sets itself) are the environment's variables."""
    lines = [
        "[project]",
        'name = "rbac-api"',
        f'image_repository = "{IMAGE_REPOSITORY}"',
        f'compose_files = ["{COMPOSE_FILE}"]',
        'app_service = "app"',
        'database_service = "db"',
        f"migration_command = {migration_command}",
        "",
    ]
    for name, stack in stacks.items():
        variables = {k: v for k, v in stack.env.items() if k not in ("APP_IMAGE", "APP_VERSION")}
        lines += [
            f"[environments.{name}]",
            f'compose_project = "{stack.project}"',
            f'base_url = "{stack.url}"',
            f"variables = {_toml_table(variables)}",
            "",
        ]
    lines += [
        "[backups]",
        f'store = "{store}"',
        f"retention = {retention}",
        "",
        "[deploy]",
        f"health_timeout_s = {health_timeout_s}",
        "lock_ttl_s = 600",
        *([f"watch_window_s = {watch_window_s}"] if watch_window_s is not None else []),
        "",
        extra,
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return load_config(path)


@dataclass
class DtdepEnv:
    """One stack plus a deploy.toml naming it `environment`."""

    stack: ComposeStack
    config_path: Path
    config: Config
    store_volume: str
    environment: str = "prod"

    def ctx(self, messages: list[str] | None = None) -> StepContext:
        sink = messages.append if messages is not None else (lambda _m: None)
        return StepContext(config=self.config, progress=sink)

    def config_with_health_timeout(self, tmp_dir: Path, seconds: float) -> Path:
        """This deploy.toml but for [deploy] health_timeout_s, written into `tmp_dir`: for a
        release that never becomes healthy, whose deploy waits out the whole timeout."""
        config = write_config(
            tmp_dir / "deploy.toml",
            {self.environment: self.stack},
            store=f"volume:{self.store_volume}",
            health_timeout_s=seconds,
        )
        return config.path

    def cli(self, *args: str, config: Path | None = None) -> Any:
        """`deploytools --config CONFIG --json ARGS...` in-process (CONFIG: this deploy.toml)."""
        path = str(config or self.config_path)
        return CliRunner().invoke(cli, ["--config", path, "--json", *args], catch_exceptions=False)


def app_containers(env: DtdepEnv) -> list[Any]:
    """The stack's app containers (not one-offs), stopped ones included."""
    return env.stack.client.containers.list(
        all=True,
        filters={
            "label": [
                f"com.docker.compose.project={env.stack.project}",
                "com.docker.compose.service=app",
                "com.docker.compose.oneoff=False",
            ]
        },
    )


def serving_version(env: DtdepEnv) -> str:
    """The version the stack's /health says it serves."""
    return str(env.stack.health()["version"])


def records(env: DtdepEnv) -> list[Any]:
    """The environment's release records, oldest first."""
    with open_environment(env.ctx(), env.environment) as session:
        return session.history.releases()


def module_env(name: str, **config_options: Any) -> Any:
    """A test module's `env` fixture (assign it: `env = module_env("dep")`): the shared stack
    as it was first set up, with a deploy.toml (`config_options` go to write_config)."""

    @pytest.fixture(scope="module", name="env")
    def env_fixture(
        dtdep_stack: SharedStack, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[DtdepEnv]:
        tmp_dir = tmp_path_factory.mktemp(f"dtdep-{name}")
        with dtdep_stack.env(name, tmp_dir, **config_options) as environment:
            yield environment

    return env_fixture


class SharedStack:
    """One stack for the session, `dtdep-shared-PID`, that the modules which deploy, roll back,
    back up, restore, check and monitor take turns on. Each gets it as first set up, at a
    release (`reset`): the app and proxy recreated from that release's image, the database
    re-created from a template of that release's schema (taken once: 1.15.1 migrated, with an
    admin; 1.15.2 the same, migrated on), so no module sees another's releases, rows or
    containers. `env` adds a deploy.toml and a store volume of the module's own.

    The pid in the name lets two runs of the suite share an engine (a CI clone beside a
    developer's run); leftovers of runs whose process is gone are removed first.
    """

    PREFIX = "dtdep-shared-"

    def __init__(self, client: Any, postgres_image: str, images: dict[str, str]) -> None:
        """images: release -> image, the first the one set up (e.g. {"1.15.1": ..., "1.15.2":
        ...}); a later one's schema is the first's migrated by its image."""
        self.client, self.postgres_image, self.images = client, postgres_image, images
        _remove_leftovers(client, self.PREFIX, postgres_image)
        self.first = next(iter(images))
        env = stack_env(postgres_image, images[self.first])
        self.stack = ComposeStack(project=f"{self.PREFIX}{os.getpid()}", env=env, client=client)
        self._env = dict(env)
        self._serving: str | None = None  # the release as set up, until a user may change it
        self._templates: set[str] = set()

    def env_file(self, path: Path) -> Path:
        """The stack's Compose variables as an env file (0600: it holds the test passwords), for
        Compose calls made outside ComposeStack (pytest-docker's setup and cleanup)."""
        self.stack.env["APP_VERSION"] = self.first
        path.write_text("".join(f"{k}={v}\n" for k, v in sorted(self.stack.env.items())))
        path.chmod(0o600)
        return path

    def start(self, wait_until_responsive: Callable[..., None]) -> SharedStack:
        """Set the stack up on its database service, already started (pytest-docker's
        docker_setup: `down -v`, then `up -d db`); `wait_until_responsive` is
        docker_services.wait_until_responsive."""
        stack = self.stack
        wait_until_responsive(check=lambda: stack.is_healthy("db"), timeout=90, pause=0.25)
        # Migrated and with its admin before the app connects: a template needs a database
        # nobody is connected to.
        stack.migrate()
        stack.create_admin()
        self._save_template(self.first)
        stack.up()
        wait_until_responsive(check=stack.responds, timeout=60, pause=0.25)
        self._serving = self.first
        return self

    def remove(self) -> None:
        """What the tests added beside the Compose project: helper and one-off containers, a
        rolling deploy's second app, store volumes. (pytest-docker's docker_cleanup takes the
        project itself down, `down -v`, after this.)"""
        self._remove_containers(keep_services=())
        _remove_volumes(self.client, self.stack.project)

    @contextlib.contextmanager
    def env(
        self,
        name: str,
        tmp_dir: Path,
        *,
        environment: str = "prod",
        release: str = "",
        **config_options: Any,
    ) -> Iterator[DtdepEnv]:
        """The stack at `release` (default: the first) as first set up, with a deploy.toml
        naming it `environment` and a store volume `PROJECT-NAME-store`; the store, helper
        containers and the release keep tags are removed afterwards."""
        self.reset(release or self.first)
        store_volume = f"{self.stack.project}-{name}-store"
        config_path = tmp_dir / "deploy.toml"
        config = write_config(
            config_path, {environment: self.stack}, store=f"volume:{store_volume}", **config_options
        )
        try:
            yield DtdepEnv(
                stack=self.stack,
                config_path=config_path,
                config=config,
                store_volume=store_volume,
                environment=environment,
            )
        finally:
            self._remove_containers(keep_services=("db", "app", "proxy"))
            _remove_volume(self.client, store_volume)
            _remove_tags(self.client, (f"{environment}-release-",))

    def reset(self, release: str = "") -> ComposeStack:
        """The stack serving `release` (default: the first) on that release's schema and rows
        as first set up; every user calls it first (the very first finds it so)."""
        release = release or self.first
        stack = self.stack
        if self._serving == release:
            self._serving = None
            return stack
        self._serving = None
        stack.env.clear()
        stack.env.update(self._env)  # a module may have changed APP_IMAGE or other variables
        stack.env.update(APP_IMAGE=self.images[release], APP_VERSION=release)
        # The app and proxy go (and every other container of the project: helpers, a rolling
        # deploy's second app); the database server stays, its database is re-created.
        self._remove_containers(keep_services=("db",))
        stack.container("db").start()  # a no-op unless a module left it stopped
        stack.wait_healthy("db")
        if release in self._templates:
            self._recreate_database(release)
        else:
            self._recreate_database(self.first)
            stack.migrate(self.images[release])
            self._save_template(release)
        stack.up()
        return stack

    def _template(self, release: str) -> str:
        return f"golden_{release.replace('.', '_')}"

    def _save_template(self, release: str) -> None:
        database = self.stack.env["POSTGRES_DB"]
        self._sql(f"CREATE DATABASE {self._template(release)} TEMPLATE {database}")
        self._templates.add(release)

    def _recreate_database(self, release: str) -> None:
        database = self.stack.env["POSTGRES_DB"]
        self._sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        self._sql(f"CREATE DATABASE {database} TEMPLATE {self._template(release)}")

    def _sql(self, sql: str) -> None:
        """SQL on the maintenance database `postgres` (not the one being copied or dropped)."""
        user = self.stack.env["POSTGRES_USER"]
        code, output = self.stack.container("db").exec_run(
            ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", "postgres", "-c", sql]
        )
        if code != 0:
            raise RuntimeError(f"psql failed ({code}): {output.decode('utf-8', 'replace')}")

    def _remove_containers(self, *, keep_services: tuple[str, ...]) -> None:
        """Every container of the project but the services named (one-offs and helpers go)."""
        project = self.stack.project
        for container in self.client.containers.list(all=True, filters={"name": project}):
            labels = container.labels
            if (
                labels.get("com.docker.compose.project") == project
                and labels.get("com.docker.compose.oneoff") != "True"
                and labels.get("com.docker.compose.service") in keep_services
            ):
                continue
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)


class ImageVariants:
    """Tiny images FROM a release image (a broken migration, a bad CMD, a label), built once
    per session whatever module asks first, untagged at the end of the session."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._built: dict[str, str] = {}

    def build(self, base: str, tag: str, *, dockerfile: str, files: dict[str, str]) -> str:
        if tag not in self._built:
            self._built[tag] = build_variant(
                self.client, base, tag, dockerfile=dockerfile, files=files
            )
        return tag

    def remove(self) -> None:
        # force: the shared stack may still run one of them (the tag goes, the image stays).
        for tag in self._built:
            with contextlib.suppress(Exception):
                self.client.api.remove_image(tag, force=True, noprune=False)
        self._built.clear()


def _remove_tags(client: Any, prefixes: tuple[str, ...]) -> None:
    """Untag what the tests added to the engine under tags starting with `prefixes` (the keep
    tags deploys put on release images: <env>-release-<id>). Images in use stay."""
    for image in client.images.list(name=IMAGE_REPOSITORY):
        for tag in image.tags:
            if tag.split(":", 1)[1].startswith(prefixes):
                with contextlib.suppress(Exception):
                    client.api.remove_image(tag, noprune=False)


def _remove_leftovers(client: Any, prefix: str, postgres_image: str) -> None:
    """Stacks and volumes `PREFIX<pid>...` of earlier runs whose process no longer exists."""
    projects = {
        c.labels.get("com.docker.compose.project", "")
        for c in client.containers.list(all=True, filters={"name": prefix})
    }
    volumes = {v.name for v in client.volumes.list() if v.name.startswith(prefix)}
    for name in projects | volumes:
        pid = name.removeprefix(prefix).split("-", 1)[0].split("_", 1)[0]
        if not pid.isdigit() or alive(int(pid)):
            continue
        project = prefix + pid
        if name == project:
            ComposeStack(
                project=project, env=stack_env(postgres_image, "unused"), client=client
            ).down()
        for container in client.containers.list(all=True, filters={"name": project}):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        _remove_volumes(client, project)


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_volume(client: Any, name: str) -> None:
    """The volume, and first the containers that mount it (the engine refuses to remove a
    volume in use): a store's kept helper (deploytools/store/helper.py) outlives its command."""
    users = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"volume={name}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if users:
        subprocess.run(["docker", "rm", "-f", "-v", *users], capture_output=True, check=False)
    subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True, check=False)


def _remove_volumes(client: Any, project: str) -> None:
    """The project's volumes: its stores (PROJECT-*), the Compose ones (PROJECT_*)."""
    for volume in client.volumes.list():
        if volume.name.startswith((f"{project}-", f"{project}_")):
            _remove_volume(client, volume.name)


#: A variant's CMD that serves nothing, but stops at once on SIGTERM (a bare sleep as PID 1
#: ignores it): an image that never becomes healthy.
NEVER_HEALTHY = 'CMD ["sh", "-c", "trap \'exit 0\' TERM; sleep 3600 & wait"]\n'

BROKEN_MIGRATION = '''"""Fails half-way: creates a table, then divides by zero."""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("dtdep_half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("SELECT 1 / 0")


def downgrade() -> None:
    op.drop_table("dtdep_half_done")
'''


def build_variant(
    client: Any, base: str, tag: str, *, dockerfile: str, files: dict[str, str]
) -> str:
    """A tiny image FROM a release image (seconds to build): a broken migration, a bad CMD."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in {"Dockerfile": f"FROM {base}\n{dockerfile}", **files}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    client.images.build(fileobj=buffer, custom_context=True, tag=tag, rm=True)
    return tag
