"""The reference stack on a real 3-node Swarm, through deploytools with `platform = "swarm"`:
status lists every task with its node; a backup is taken and verified where the database task
runs and a restore gives the rows back; a migration runs once, as a replicated job on the
stack's network, with its exit code and logs; a failed migration leaves the schema and the
serving release as they were, and says so.

One stack (dtswp1, port 18100) is deployed once for the module: the tests read it, and those
that change it put it back as it was (the restore gives the rows back; the failed migration
changes nothing).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.database import Database
from deploytools.platforms.swarm import SwarmPlatform
from tests.helpers.shared_stack import BROKEN_MIGRATION, build_variant
from tests.helpers.stacks import COMPOSE_FILE, PROXY_IMAGE, ReleaseImages
from tests.helpers.swarm_cluster import SwarmCluster, SwarmClusterError

STACK = "dtswp1"
PORT = 18100
ENV = "prod"
MIGRATE = ["alembic", "-c", "/app/alembic.ini"]
BROKEN_TAG = "rbac-api-test:dtswp-broken-migration"


@dataclass
class SwarmEnv:
    cluster: SwarmCluster
    config: Path
    image: str
    broken: str

    def cli(self, *args: str) -> Any:
        return CliRunner().invoke(
            cli, ["--config", str(self.config), "--json", *args], catch_exceptions=False
        )

    def platform(self) -> SwarmPlatform:
        platform = StepContext(config=load_config(self.config)).platform(ENV)
        assert isinstance(platform, SwarmPlatform)
        return platform

    def psql(self, sql: str) -> str:
        done = self.platform().exec_in_service(
            "db", ["psql", "-U", "rbac", "-d", "rbac", "-v", "ON_ERROR_STOP=1", "-Atc", sql]
        )
        assert done.exit_code == 0, done.stderr
        return done.text().strip()

    def services(self) -> list[str]:
        return self.cluster.docker(
            self.cluster.manager, "service", "ls", "--format", "{{.Name}}"
        ).split()


def wait_for(what: str, probe: Any, *, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(1)


def healthy(platform: SwarmPlatform, service: str, count: int) -> bool:
    states = [s for s in platform.services() if s.service == service]
    return len(states) == count and all(s.healthy for s in states)


def write_config(path: Path, cluster: SwarmCluster, postgres_image: str) -> None:
    shutil.copy(COMPOSE_FILE, path.parent / "docker-compose.prod.yml")
    variables = {
        "POSTGRES_IMAGE": postgres_image,
        "PROXY_IMAGE": PROXY_IMAGE,
        "APP_PORT": str(PORT),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
        "APP_SECRET_KEY": secrets.token_urlsafe(32),
    }
    table = ", ".join(f'{k} = "{v}"' for k, v in variables.items())
    path.write_text(
        f"""
[project]
name = "svc"
image_repository = "ghcr.io/example/svc"
compose_files = ["docker-compose.prod.yml"]
app_service = "app"
database_service = "db"
migration_command = {json.dumps([*MIGRATE, "upgrade", "head"])}

[environments.{ENV}]
docker_host = "{cluster.manager.docker_host}"
compose_project = "{STACK}"
base_url = "http://{cluster.manager.address}:{PORT}"
platform = "swarm"
variables = {{ {table} }}

[environments.{ENV}.swarm]
node_host = "tcp://{{addr}}:2375"
replicas = 2

[backups]
store = "volume:{STACK}-backups"

[deploy]
health_timeout_s = 180.0
migration_timeout_s = 180.0
"""
    )


@pytest.fixture(scope="module")
def env(
    swarm_cluster: SwarmCluster,
    docker_client: docker.DockerClient,
    postgres_image: str,
    release_images: ReleaseImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SwarmEnv]:
    image = release_images["1.15.2"]
    broken = build_variant(
        docker_client,
        image,
        BROKEN_TAG,
        dockerfile="COPY 0003_broken.py /app/migrations/versions/0003_broken.py\n",
        files={"0003_broken.py": BROKEN_MIGRATION},
    )
    swarm_cluster.load_images(postgres_image, PROXY_IMAGE, image, broken)
    config = tmp_path_factory.mktemp("dtswp") / "deploy.toml"
    write_config(config, swarm_cluster, postgres_image)
    made = SwarmEnv(swarm_cluster, config, image, broken)
    platform = made.platform()
    remove_stack(made)
    try:
        # The database first, its schema, then the app: the app is healthy on a migrated base.
        platform.start(["db"], what="starting the database")
        wait_for("the database task", lambda: healthy(platform, "db", 1))
        migrated = made.cli("migrate", "--env", ENV, "--image", image, "--no-backup-check")
        assert migrated.exit_code == 0, migrated.output
        platform.deploy_stack({"APP_IMAGE": image}, what="deploying the test stack")
        wait_for("2 healthy app tasks", lambda: healthy(platform, "app", 2))
        yield made
    finally:
        remove_stack(made)
        docker_client.api.remove_image(BROKEN_TAG, force=True)


def remove_stack(env: SwarmEnv) -> None:
    """The stack, its jobs, the store's helper and the volumes on every node (a rerun starts
    from nothing). A node another test left stopped is skipped: Swarm removes its tasks'
    containers when it is back, and the next run's clean-up its volumes."""
    cluster = env.cluster
    if any(name.startswith(f"{STACK}_") for name in env.services()):
        env.platform().remove_stack()
    wait_for(
        "the stack's services to go",
        lambda: not any(n.startswith(f"{STACK}_") for n in env.services()),
        timeout_s=60,
    )
    for node in cluster.nodes:
        try:
            # The stack's task containers (they go a moment after their services) and the
            # store's helper (`dtswp1-store-...`, kept on the manager between commands).
            wait_for(
                f"the stack's containers on {node.name} to go",
                lambda n=node: _containers_gone(cluster, n),
                timeout_s=60,
            )
            for volume in cluster.docker(node, "volume", "ls", "-q").split():
                if volume.startswith(STACK):
                    cluster.docker(node, "volume", "rm", "-f", volume)
        except SwarmClusterError:
            continue  # the node does not answer


def _containers_gone(cluster: SwarmCluster, node: Any) -> bool:
    """Removes what is left on the node (the services are gone: their tasks' containers are
    orphans Swarm may take a while to collect); whether nothing is left."""
    helpers = cluster.docker(node, "ps", "-aq", "--filter", f"name=^{STACK}-store-").split()
    tasks = cluster.docker(
        node, "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}"
    ).split()
    if helpers or tasks:
        with contextlib.suppress(SwarmClusterError):  # one went by itself meanwhile
            cluster.docker(node, "rm", "-f", "-v", *helpers, *tasks)
        return False
    return True


def test_status_lists_every_task_with_its_node(env: SwarmEnv) -> None:
    result = env.cli("status", "--env", ENV)
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)["result"]
    services = status["services"]
    by_service: dict[str, list[dict[str, Any]]] = {}
    for entry in services:
        by_service.setdefault(entry["service"], []).append(entry)
    assert sorted(by_service) == ["app", "db", "proxy"]
    assert len(by_service["app"]) == 2
    nodes = {n.name for n in env.cluster.nodes}
    for entry in services:
        assert entry["node"] in nodes, entry
        assert entry["state"] == "running" and entry["health"] == "healthy", entry
    assert {e["image"] for e in by_service["app"]} == {env.image}
    # Each task as its node's engine knows it: the node's own docker sees the container.
    for entry in by_service["app"]:
        node = next(n for n in env.cluster.nodes if n.name == entry["node"])
        names = env.cluster.docker(node, "ps", "--format", "{{.Names}}").split()
        assert entry["container"] in names


def test_a_migration_runs_once_as_a_job_with_its_exit_code_and_logs(env: SwarmEnv) -> None:
    platform = env.platform()
    done = platform.run_once(
        "app",
        [*MIGRATE, "current"],
        env={"APP_IMAGE": env.image},
        timeout_s=120,
        what="alembic current",
    )
    assert done.returncode == 0
    assert "0002 (head)" in done.stdout  # reached the database over the stack's network
    assert not [n for n in env.services() if "-job-" in n]  # the job was removed
    # Through the CLI, under the deploy lock: at head already, the release record says so.
    result = env.cli("migrate", "--env", ENV, "--image", env.image, "--no-backup-check")
    assert result.exit_code == 0, result.output
    migrated = json.loads(result.stdout)["result"]
    assert (migrated["revision_before"], migrated["revision_after"]) == ("0002", "0002")
    history = json.loads(env.cli("history", "--env", ENV).stdout)["result"]
    assert history["releases"][0]["kind"] == "migrate"
    assert history["releases"][0]["outcome"] == "succeeded"
    assert history["lock"] is None


def test_a_backup_is_taken_and_verified_on_the_database_node_and_restores(
    env: SwarmEnv,
) -> None:
    env.psql("CREATE TABLE IF NOT EXISTS dtswp_notes (id serial PRIMARY KEY, body text)")
    env.psql("INSERT INTO dtswp_notes (body) SELECT 'note ' || g FROM generate_series(1, 25) g")
    platform = env.platform()
    (db_task,) = platform.tasks("db", desired_state="running")
    assert Database.of(platform).container.id == db_task.container_id

    created = env.cli("backup", "create", "--env", ENV)
    assert created.exit_code == 0, created.output
    backup = json.loads(created.stdout)["result"]
    backup_id = backup["manifest"]["id"]
    assert backup["manifest"]["row_counts"]["public.dtswp_notes"] == 25
    assert backup["verification"]["ok"] is True
    verified = env.cli("backup", "verify", "--env", ENV, backup_id)
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["result"]["ok"] is True

    env.psql("DELETE FROM dtswp_notes WHERE id > 5")
    restored = env.cli("backup", "restore", "--env", ENV, backup_id, "--yes")
    assert restored.exit_code == 0, restored.output
    result = json.loads(restored.stdout)["result"]
    assert result["revision_after"] == "0002"
    assert env.psql("SELECT count(*) FROM dtswp_notes") == "25"
    # The app was paused for the swap and serves again, the same release.
    wait_for("2 healthy app tasks", lambda: healthy(env.platform(), "app", 2))
    assert {s.image for s in env.platform().services() if s.service == "app"} == {env.image}


def test_a_failed_migration_leaves_the_schema_and_the_release_and_says_so(
    env: SwarmEnv,
) -> None:
    before = [s.container for s in env.platform().services() if s.service == "app"]
    result = env.cli("migrate", "--env", ENV, "--image", env.broken, "--no-backup-check")
    assert result.exit_code == 3, result.output
    error = json.loads(result.stdout)["error"]
    assert error["message"].startswith(f"the migration with {env.broken} failed: ")
    assert "division by zero" in error["message"]
    assert error["untouched"] == (
        "the schema is at revision 0002 (it was 0002); the app was not touched by the migration"
    )
    assert env.psql("SELECT version_num FROM alembic_version") == "0002"
    assert env.psql("SELECT to_regclass('public.dtdep_half_done') IS NULL") == "t"
    assert not [n for n in env.services() if "-job-" in n]
    platform = env.platform()
    assert healthy(platform, "app", 2)
    assert [s.container for s in platform.services() if s.service == "app"] == before
    app = platform.swarm.service(platform.service_name("app"))
    assert app is not None and app.image == env.image
    history = json.loads(env.cli("history", "--env", ENV).stdout)["result"]
    record = history["releases"][0]
    assert (record["kind"], record["outcome"], record["image"]) == ("migrate", "failed", env.broken)
    assert any("division by zero" in line for line in record["failure_output"])
    assert history["lock"] is None
