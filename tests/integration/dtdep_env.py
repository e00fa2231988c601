"""Helpers shared by the backup, deploy and rollback integration tests (Docker prefix dtdep-).

Each test module brings up its own stack of docker-compose.prod.yml under a `dtdep-*` project,
writes a deploy.toml for it into a temporary directory, and removes stack, store volume and
helper containers at the end, failures included.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import COMPOSE_FILE, ComposeStack, free_port

from deploytools.config import Config, load_config
from deploytools.context import StepContext

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
        "",
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


@contextlib.contextmanager
def dtdep_env(
    client: Any,
    tmp_dir: Path,
    *,
    name: str,
    postgres_image: str,
    app_image: str,
    **config_options: Any,
) -> Iterator[DtdepEnv]:
    """Bring up stack `dtdep-NAME-PID` (migrated, with an admin), yield it with its deploy.toml,
    and remove the stack, its store volume and any helper container afterwards.

    The pid in the name lets two runs of the suite share an engine (a CI clone beside a
    developer's run); leftovers of runs whose process is gone are removed first.
    """
    _remove_leftovers(client, f"dtdep-{name}-", postgres_image)
    project = f"dtdep-{name}-{os.getpid()}"
    store_volume = f"{project}-store"
    stack = ComposeStack(project=project, env=stack_env(postgres_image, app_image), client=client)
    try:
        stack.up()
        stack.migrate()
        stack.create_admin()
        config_path = tmp_dir / "deploy.toml"
        config = write_config(
            config_path, {"prod": stack}, store=f"volume:{store_volume}", **config_options
        )
        yield DtdepEnv(
            stack=stack, config_path=config_path, config=config, store_volume=store_volume
        )
    finally:
        for container in client.containers.list(all=True, filters={"name": project}):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        stack.down()
        _remove_volume(client, store_volume)
        _remove_tags(client)


def _remove_tags(client: Any) -> None:
    """Untag what the tests added to the engine: the variant images (dtdep-*) and the keep tags
    deploys put on release images (<env>-release-<id>). Images in use stay."""
    for image in client.images.list(name=IMAGE_REPOSITORY):
        for tag in image.tags:
            name = tag.split(":", 1)[1]
            if name.startswith(("dtdep-", "prod-release-")):
                with contextlib.suppress(Exception):
                    client.api.remove_image(tag, noprune=False)


def _remove_leftovers(client: Any, prefix: str, postgres_image: str) -> None:
    """Stacks and store volumes `PREFIX<pid>` of earlier runs whose process no longer exists."""
    projects = {
        c.labels.get("com.docker.compose.project", "")
        for c in client.containers.list(all=True, filters={"name": prefix})
    }
    volumes = {v.name for v in client.volumes.list() if v.name.startswith(prefix)}
    for name in projects | volumes:
        pid = name.removeprefix(prefix).split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        project = prefix + pid
        if name == project:
            ComposeStack(
                project=project, env=stack_env(postgres_image, "unused"), client=client
            ).down()
        for container in client.containers.list(all=True, filters={"name": project}):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        _remove_volume(client, f"{project}-store")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_volume(client: Any, name: str) -> None:
    subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True, check=False)


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
