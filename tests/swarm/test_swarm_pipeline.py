"""One `deploytools pipeline run` of the reference service, production on the 3-node Swarm.

Staging is a Compose project on the machine's engine (dtswe1-staging: the common first step of a
team moving to Swarm), production the stack dtswe1 on the cluster behind deploytools' proxy on
the manager; both start at rbac-api 1.15.1, production with data in it. `pipeline run --tag
v1.15.2 --yes --monitor` (a subprocess, as a person runs it) then verifies the release, builds
the image once and pushes it to a registry the nodes pull from (tests/helpers/swarm_registry.py),
deploys staging, checks it, backs up and migrates production and rolls the release out on its
three replicas, verifies and watches it. Every step passes; every task runs the built image,
pulled by its digest on its node; the rows written before are there; production's history
records the release. Run again, the pipeline finds the release serving in the stack's tasks and
deploys nothing.

Stacks and ports: dtswe1*, 18450 (the registry), 18451 (production's proxy on the manager),
18452 (staging's proxy on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from deploytools import proxy_settings, proxy_swarm
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.session import open_environment, start_database
from deploytools.steps import deploy_swarm
from deploytools.steps import proxy_start as proxy_start_step
from tests.helpers.pipeline_env import LONG_TITLE, UNICODE_TITLE, check_sections, seed_production
from tests.helpers.stacks import PROXY_IMAGE, ReleaseImages, ReleaseRepo
from tests.helpers.swarm_cluster import SwarmCluster, SwarmClusterError
from tests.helpers.swarm_registry import ClusterRegistry, cluster_registry

STACK = "dtswe1"
STAGING_PROJECT = f"{STACK}-staging"
STORE_VOLUME = f"{STACK}-backups"
REGISTRY_PORT = 18450
PRODUCTION_PORT = 18451
STAGING_PORT = 18452
REPOSITORY = "dtswe/rbac-api"
MIGRATE = ["alembic", "-c", "/app/alembic.ini", "upgrade", "head"]

#: The app and its database; no proxy service: deploytools' own proxy fronts the app, a
#: container on the machine for staging, one on the manager for the Swarm.
COMPOSE = """\
version: "2.4"
services:
  db:
    image: ${POSTGRES_IMAGE}
    environment:
      POSTGRES_USER: rbac
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}
      POSTGRES_DB: rbac
    volumes:
      - db-data:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U rbac -d rbac"]
      interval: 2s
      timeout: 3s
      retries: 30
  app:
    image: ${APP_IMAGE:-rbac-api-test:1.15.1}
    environment:
      DATABASE_HOST: db
      DATABASE_PORT: "5432"
      POSTGRES_USER: rbac
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}
      POSTGRES_DB: rbac
      APP_SECRET_KEY: ${APP_SECRET_KEY}
      LOG_LEVEL: warning
    expose:
      - "8080"
    healthcheck:
      test:
        - CMD
        - bash
        - -c
        - "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3
          && read -r status <&3 && [[ $$status == *' 200 '* ]]"
      interval: 2s
      timeout: 3s
      retries: 3
      start_period: 10s
    stop_grace_period: 10s
volumes:
  db-data:
"""


def write_config(path: Path, cluster: SwarmCluster, registry: ClusterRegistry, pg: str) -> None:
    (path.parent / "docker-compose.yml").write_text(COMPOSE, encoding="utf-8")
    plain = f'{{ POSTGRES_IMAGE = "{pg}" }}'
    manager = cluster.manager
    lines = [
        "[project]",
        'name = "rbac-api"',
        f'image_repository = "{registry.repository(REPOSITORY)}"',
        'compose_files = ["docker-compose.yml"]',
        'app_service = "app"',
        'database_service = "db"',
        f"migration_command = {json.dumps(MIGRATE)}",
        "",
        "[environments.staging]",
        f'compose_project = "{STAGING_PROJECT}"',
        f'base_url = "http://127.0.0.1:{STAGING_PORT}"',
        f"variables = {plain}",
        'secrets = ["POSTGRES_PASSWORD", "APP_SECRET_KEY"]',
        "",
        "[environments.production]",
        f'docker_host = "{manager.docker_host}"',
        f'compose_project = "{STACK}"',
        f'base_url = "http://{manager.address}:{PRODUCTION_PORT}"',
        'platform = "swarm"',
        "requires_approval = true",
        f"variables = {plain}",
        'secrets = ["POSTGRES_PASSWORD", "APP_SECRET_KEY"]',
        "",
        "[environments.production.swarm]",
        'node_host = "tcp://{addr}:2375"',
        "replicas = 3",
        "update_monitor_s = 3",
        "",
        "[proxy]",
        f'image = "{PROXY_IMAGE}"',
        "",
        "[backups]",
        f'store = "volume:{STORE_VOLUME}"',
        "retention = 5",
        "",
        "[deploy]",
        "health_timeout_s = 90.0",
        "migration_timeout_s = 180.0",
        "lock_ttl_s = 600",
        "",
        *check_sections(),
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


@dataclass
class World:
    cluster: SwarmCluster
    registry: ClusterRegistry
    config: Path
    env: dict[str, str]
    repo: ReleaseRepo

    def ctx(self) -> StepContext:
        return StepContext(config=load_config(self.config))

    def production(self) -> SwarmPlatform:
        platform = self.ctx().platform("production")
        assert isinstance(platform, SwarmPlatform)
        return platform

    @property
    def production_url(self) -> str:
        return f"http://{self.cluster.manager.address}:{PRODUCTION_PORT}"

    def pipeline(self, *args: str) -> tuple[int, dict[str, Any], str]:
        argv = [sys.executable, "-m", "deploytools", "--config", str(self.config), "--json"]
        done = subprocess.run(
            [*argv, "pipeline", "run", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        try:
            return done.returncode, json.loads(done.stdout), done.stderr
        except ValueError:
            raise AssertionError(
                f"exit {done.returncode}, no JSON on stdout:\n{done.stdout}\n{done.stderr}"
            ) from None


def wait_for(what: str, probe: Any, *, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            value = probe()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(1)


def bring_up(ctx: StepContext, environment: str, image: str, admin: dict[str, str]) -> None:
    """A first release as a team brings a stack up by hand: the database, the schema, the admin,
    the app (one container, or the stack's 3 replicas), deploytools' proxy in front."""
    platform = ctx.platform(environment)
    start_database(ctx, platform)
    app_env = {"APP_IMAGE": image}
    for command, container_env in (
        (MIGRATE, {}),
        (["python3", "-m", "rbac_api.create_admin"], admin),
    ):
        platform.run_once(
            "app",
            command,
            env=app_env,
            container_env=container_env,
            timeout_s=180,
            what=f"{command[0]} for the first release of {environment}",
        )
    if isinstance(platform, SwarmPlatform):
        platform.deploy_stack(app_env, what="the first release")
        wait_for(
            "3 tasks of the first release",
            lambda: (
                [t.image for t in platform.tasks("app", desired_state="running") if t.running]
                == [image] * 3
            ),
        )
        resolved = proxy_settings.resolve(platform.config, platform.environment)
        proxy_swarm.ensure_running(
            platform.manager, deploy_swarm.proxy_spec(platform, resolved), timeout_s=90
        )
    else:
        platform.start(["app"], env=app_env, what="the first release")
        proxy_start_step.run(ctx, environment=environment)


def remove_staging(client: docker.DockerClient) -> None:
    for container in client.containers.list(all=True, filters={"name": STAGING_PROJECT}):
        container.remove(force=True, v=True)
    for volume in client.volumes.list():
        if volume.name.startswith(STAGING_PROJECT) or volume.name == STORE_VOLUME:
            with contextlib.suppress(docker.errors.APIError):
                volume.remove(force=True)
    for network in client.networks.list(names=[STAGING_PROJECT]):
        with contextlib.suppress(docker.errors.APIError):
            network.remove()


def remove_production(cluster: SwarmCluster) -> None:
    """The stack, its proxy and store helper on the manager, its containers and volumes on
    every node (a node that does not answer keeps them for the next run's clean-up)."""
    manager = cluster.manager
    for name in cluster.docker(manager, "ps", "-aq", "--filter", f"name=^{STACK}-").split():
        cluster.docker(manager, "rm", "-f", "-v", name)
    services = cluster.docker(manager, "service", "ls", "--format", "{{.Name}}").split()
    if any(s.startswith(f"{STACK}_") for s in services):
        cluster.docker(manager, "stack", "rm", STACK)
    wait_for(
        "the stack's services to go",
        lambda: (
            not any(
                s.startswith(f"{STACK}_")
                for s in cluster.docker(manager, "service", "ls", "--format", "{{.Name}}").split()
            )
        ),
        timeout_s=60,
    )
    label = f"label=com.docker.stack.namespace={STACK}"
    for node in cluster.nodes:
        try:
            leftovers = cluster.docker(node, "ps", "-aq", "--filter", label).split()
            if leftovers:
                cluster.docker(node, "rm", "-f", *leftovers)
            for volume in cluster.docker(node, "volume", "ls", "-q").split():
                if volume.startswith(STACK):
                    cluster.docker(node, "volume", "rm", "-f", volume)
        except SwarmClusterError as error:
            print(f"clean-up of {STACK} on {node.name}: {error}", file=sys.stderr)


@pytest.fixture(scope="module")
def world(
    swarm_cluster: SwarmCluster,
    docker_client: docker.DockerClient,
    postgres_image: str,
    release_images: ReleaseImages,
    release_repo: ReleaseRepo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    first = release_images["1.15.1"]
    swarm_cluster.load_images(postgres_image, PROXY_IMAGE, first)
    tmp = tmp_path_factory.mktemp("dtswe")
    shared = {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
        "APP_SECRET_KEY": secrets.token_urlsafe(32),
        "ADMIN_USERNAME": "admin",
        "ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "CHECK_VIEWER_USERNAME": "dtswe-viewer",
        "CHECK_VIEWER_PASSWORD": secrets.token_urlsafe(18),
    }
    admin = {k: shared[k] for k in ("ADMIN_USERNAME", "ADMIN_PASSWORD")}
    saved = {k: os.environ.get(k) for k in shared}
    with cluster_registry(swarm_cluster, port=REGISTRY_PORT, root=tmp) as registry:
        config = tmp / "deploy.toml"
        write_config(config, swarm_cluster, registry, postgres_image)
        env = {**os.environ, **shared}
        env.pop("GITHUB_ACTIONS", None)
        made = World(swarm_cluster, registry, config, env, release_repo)
        remove_staging(docker_client)
        remove_production(swarm_cluster)
        try:
            # The stacks' variables and the first release's secrets, as the pipeline has them.
            os.environ.update(shared)
            bring_up(made.ctx(), "staging", first, admin)
            bring_up(made.ctx(), "production", first, admin)
            seed_production(made.production_url, shared)
            yield made
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            remove_staging(docker_client)
            remove_production(swarm_cluster)
            registry.remove_images(registry.repository(REPOSITORY))
            for image in docker_client.images.list(name=registry.repository(REPOSITORY)):
                with contextlib.suppress(docker.errors.APIError):
                    docker_client.images.remove(image.id, force=True)


def documents(platform: SwarmPlatform) -> list[str]:
    done = platform.exec_in_service(
        "db",
        ["psql", "-U", "rbac", "-d", "rbac", "-Atc", "SELECT title FROM documents ORDER BY id"],
    )
    assert done.exit_code == 0, done.stderr
    return done.text().splitlines()


def test_one_pipeline_run_takes_the_release_to_production_on_swarm(world: World) -> None:
    production = world.production()
    before = documents(production)
    assert LONG_TITLE in before and UNICODE_TITLE in before

    code, result, stderr = world.pipeline(
        "--tag", "v1.15.2", "--repo", str(world.repo.path), "--yes", "--monitor", "6s"
    )

    print(stderr, file=sys.stderr)  # the steps' lines, shown when an assertion fails
    assert code == 0, stderr
    record = result["result"]["record"]
    assert record["status"] == "succeeded", stderr
    assert {s["name"]: s["status"] for s in record["steps"]} == {
        name: "passed"
        for name in (
            "verify-release",
            "build-image",
            "deploy-staging",
            "smoke-staging",
            "validate-staging",
            "approve-production",
            "backup-production",
            "migrate-production",
            "deploy-production",
            "verify-production",
            "monitor-production",
        )
    }, stderr
    # Built once, pushed, and handed on by the registry's digest.
    pinned = record["image"]
    repository = world.registry.repository(REPOSITORY)
    assert pinned.startswith(f"{repository}:1.15.2@sha256:"), pinned
    digest = pinned.rsplit("@", 1)[1]

    # Every task of production runs it, each pulled by its digest on its own node.
    tasks = [t for t in production.tasks("app", desired_state="running") if t.running]
    assert len(tasks) == 3
    assert {t.image for t in tasks} == {pinned}
    for task in tasks:
        container = production.task_container(task)
        assert container is not None
        image = container.image()
        assert image is not None
        assert f"{repository}@{digest}" in image.repo_digests, (task.node, image.repo_digests)
    health = requests.get(f"{world.production_url}/health", timeout=10).json()
    assert health["version"] == "1.15.2"

    # The rows written before are there; the schema is the release's.
    after = documents(production)
    assert set(before) <= set(after)
    revision = production.exec_in_service(
        "db",
        ["psql", "-U", "rbac", "-d", "rbac", "-Atc", "SELECT version_num FROM alembic_version"],
    )
    assert revision.text().strip() == "0002"

    # Production's history records the release, deployed by the Swarm strategy.
    with open_environment(world.ctx(), "production", read_only=True) as session:
        releases = session.history.releases()
    deployed = [r for r in releases if r.kind == "deploy" and r.image == pinned]
    assert deployed, [(r.id, r.kind, r.image, r.outcome) for r in releases]
    assert deployed[-1].outcome == "succeeded"
    assert deployed[-1].version == "1.15.2"
    assert deployed[-1].strategy == deploy_swarm.STRATEGY
    assert deployed[-1].backup_id

    # Again: the stack's tasks run it, healthy; the pipeline says so and deploys nothing.
    code, again, stderr = world.pipeline(
        "--tag", "v1.15.2", "--repo", str(world.repo.path), "--yes"
    )
    assert code == 0, stderr
    assert again["result"]["already_done"] is True, stderr
    assert "nothing to do" in stderr
    assert {t.id for t in production.tasks("app", desired_state="running")} == {t.id for t in tasks}
