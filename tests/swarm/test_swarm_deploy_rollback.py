"""The deploy and the rollback on a real 3-node Swarm (`platform = "swarm"`), behind
deploytools' proxy on the manager, under an open load from this machine:

- a rolling update of 3 replicas loses no request, and every task then runs the release;
- a release whose tasks never become healthy is stopped: Swarm's rollback of the update puts
  the old release back, it serves throughout, and the record says so;
- `rollback` goes back to the earlier release, losing no request;
- a release whose migration contracts the schema (a column dropped, labelled not
  expand-only) is deployed with auto -> recreate: the app scaled to 0, the migration, the new
  image at 3 replicas; one whose tasks then never become healthy is undone: the data restored
  from the pre-deploy backup, the old image back at 3 replicas. `--strategy rolling` of such a
  release is still refused.

One stack (dtswd1, the proxy on port 18210) for the module; the tests run in order (each
starts from what the one before left).
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from deploytools import proxy_settings, proxy_swarm
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.errors import DeployError, UsageError
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.session import open_environment
from deploytools.steps import deploy as deploy_step
from deploytools.steps import deploy_swarm
from deploytools.steps import rollback as rollback_step
from deploytools.store.records import ReleaseRecord
from tests.helpers.load import LoadProcess, failures
from tests.helpers.shared_stack import build_variant
from tests.helpers.stacks import PROXY_IMAGE, ReleaseImages
from tests.helpers.swarm_cluster import SwarmCluster, SwarmClusterError

STACK = "dtswd1"
PORT = 18210
ENV = "prod"
RATE = 50.0
V2_TAG = "rbac-api-test:dtswd-1.15.2-expand-only"
BROKEN_TAG = "rbac-api-test:dtswd-unhealthy"
CONTRACT_TAG = "rbac-api-test:dtswd-contract"
CONTRACT_BROKEN_TAG = "rbac-api-test:dtswd-contract-unhealthy"
#: A table of the test's own (the app never reads it), made before the recreate tests (its
#: name is written out in their SQL).
LEGACY = "dtswd_legacy"
#: Migration 0003 of the contracting release: a column dropped, data the old release reads.
CONTRACT_MIGRATION = f'''"""Drop {LEGACY}.note (contracts the schema).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("{LEGACY}", "note")


def downgrade() -> None:
    op.add_column("{LEGACY}", sa.Column("note", sa.Text, nullable=True))
'''

#: The app and its database, no proxy service: deploytools' proxy fronts the app on Swarm.
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


@dataclass
class Env:
    cluster: SwarmCluster
    config: Path
    v1: str
    v2: str
    broken: str
    contract: str
    contract_broken: str

    def ctx(self) -> StepContext:
        return StepContext(config=load_config(self.config))

    def platform(self) -> SwarmPlatform:
        platform = self.ctx().platform(ENV)
        assert isinstance(platform, SwarmPlatform)
        return platform

    def images(self) -> list[str]:
        tasks = self.platform().tasks("app", desired_state="running")
        return sorted(t.image for t in tasks if t.running)

    def sql(self, query: str) -> str:
        """`query` in the database task (psql, unaligned), its output."""
        done = self.platform().exec_in_service(
            "db", ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", "rbac", "-d", "rbac", "-tAc", query]
        )
        assert done.exit_code == 0, done.error_line()
        return done.text().strip()

    def state(self) -> dict[str, str]:
        """What the recreate tests compare: the revision, the legacy table's columns, rows."""
        return {
            "revision": self.sql("SELECT version_num FROM alembic_version"),
            "columns": self.sql(
                "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM "
                "information_schema.columns WHERE table_name = 'dtswd_legacy'"
            ),
            "rows": self.sql(
                "SELECT (SELECT count(*) FROM dtswd_legacy) || '/' || (SELECT count(*) FROM users)"
                " || '/' || (SELECT count(*) FROM roles)"
            ),
        }

    def releases(self) -> list[ReleaseRecord]:
        with open_environment(self.ctx(), ENV) as session:
            return session.history.releases()

    def load(self) -> LoadProcess:
        return LoadProcess(PORT, rate_per_s=RATE, hosts=(self.cluster.manager.address,))


def write_config(path: Path, cluster: SwarmCluster, postgres_image: str) -> None:
    (path.parent / "docker-compose.yml").write_text(COMPOSE, encoding="utf-8")
    variables = {
        "POSTGRES_IMAGE": postgres_image,
        "PROXY_IMAGE": PROXY_IMAGE,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
        "APP_SECRET_KEY": secrets.token_urlsafe(32),
    }
    table = ", ".join(f'{k} = "{v}"' for k, v in variables.items())
    migrate = ["alembic", "-c", "/app/alembic.ini", "upgrade", "head"]
    path.write_text(
        f"""
[project]
name = "svc"
image_repository = "rbac-api-test"
compose_files = ["docker-compose.yml"]
app_service = "app"
database_service = "db"
migration_command = {json.dumps(migrate)}

[environments.{ENV}]
docker_host = "{cluster.manager.docker_host}"
compose_project = "{STACK}"
base_url = "http://{cluster.manager.address}:{PORT}"
platform = "swarm"
variables = {{ {table} }}

[environments.{ENV}.swarm]
node_host = "tcp://{{addr}}:2375"
replicas = 3
update_monitor_s = 3

[backups]
store = "volume:{STACK}-backups"

[deploy]
health_timeout_s = 90.0
migration_timeout_s = 180.0
""",
        encoding="utf-8",
    )


def wait_for(what: str, probe: Any, *, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(1)


def remove_stack(env: Env) -> None:
    cluster = env.cluster
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
    for node in cluster.nodes:
        try:
            # The services are gone; what is left of them on a node (the migration job's
            # exited container, say) stays until Swarm's task reaper gets to it, minutes on
            # this cluster: removed now rather than waited for.
            leftovers = cluster.docker(
                node, "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}"
            ).split()
            if leftovers:
                cluster.docker(node, "rm", "-f", *leftovers)
            wait_for(
                f"the stack's containers on {node.name} to go",
                lambda n=node: (
                    not cluster.docker(
                        n, "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}"
                    ).split()
                ),
                timeout_s=180,
            )
            for volume in cluster.docker(node, "volume", "ls", "-q").split():
                if volume.startswith(STACK):
                    cluster.docker(node, "volume", "rm", "-f", volume)
        except (SwarmClusterError, AssertionError) as error:
            # A node another test stopped, or a slow one: Swarm removes the tasks' containers
            # when it can, and the next run's clean-up the volumes.
            print(f"clean-up of {STACK} on {node.name}: {error}", file=sys.stderr)
            continue


@pytest.fixture(scope="module")
def env(
    swarm_cluster: SwarmCluster,
    docker_client: docker.DockerClient,
    postgres_image: str,
    release_images: ReleaseImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    v1 = release_images["1.15.1"]
    v2 = build_variant(
        docker_client,
        release_images["1.15.2"],
        V2_TAG,
        dockerfile='LABEL deploytools.migrations.expand-only="true"\n',
        files={},
    )
    # Listens on another port than the one its healthcheck and the proxy ask: never healthy.
    broken = build_variant(docker_client, v2, BROKEN_TAG, dockerfile="ENV PORT=8081\n", files={})
    # Not expand-only: its migration 0003 drops a column (the label says so, as the lint would).
    contract = build_variant(
        docker_client,
        v2,
        CONTRACT_TAG,
        dockerfile='LABEL deploytools.migrations.expand-only="false"\n'
        "COPY 0003_contract.py /app/migrations/versions/0003_contract.py\n",
        files={"0003_contract.py": CONTRACT_MIGRATION},
    )
    contract_broken = build_variant(
        docker_client, contract, CONTRACT_BROKEN_TAG, dockerfile="ENV PORT=8081\n", files={}
    )
    swarm_cluster.load_images(
        postgres_image, PROXY_IMAGE, v1, v2, broken, contract, contract_broken
    )
    config = tmp_path_factory.mktemp("dtswd") / "deploy.toml"
    write_config(config, swarm_cluster, postgres_image)
    made = Env(swarm_cluster, config, v1, v2, broken, contract, contract_broken)
    remove_stack(made)
    try:
        # The database first (SwarmPlatform.running asks for the tasks of a service that
        # does not exist yet with a NotFound: the platform's to fix), then the first deploy.
        # The first release as a team brings a stack up by hand: the database, the schema,
        # the stack (SwarmPlatform asks for the tasks of a service that does not exist yet
        # with a NotFound, so deploytools' first deploy to an empty stack waits for its fix).
        platform = made.platform()
        platform.start(["db"], what="starting the database")
        wait_for("the database task", lambda: platform.running("db"))
        migrated = platform.run_once(
            "app",
            ["alembic", "-c", "/app/alembic.ini", "upgrade", "head"],
            env={"APP_IMAGE": v1},
            timeout_s=180,
            what="the first schema",
        )
        assert migrated.returncode == 0, migrated.stderr
        platform.deploy_stack({"APP_IMAGE": v1}, what="the first release")
        wait_for("3 tasks of the first release", lambda: made.images() == [v1] * 3)
        # deploytools' proxy up before the load starts (a deploy starts it when it does not
        # run, and keeps it when it runs with the same config).
        resolved = proxy_settings.resolve(platform.config, platform.environment)
        proxy_swarm.ensure_running(
            platform.manager, deploy_swarm.proxy_spec(platform, resolved), timeout_s=60
        )
        yield made
    finally:
        remove_stack(made)
        for tag in (V2_TAG, BROKEN_TAG, CONTRACT_TAG, CONTRACT_BROKEN_TAG):
            docker_client.api.remove_image(tag, force=True)


def test_a_rolling_update_of_3_replicas_loses_no_request(env: Env) -> None:
    assert env.images() == [env.v1] * 3
    with env.load() as load:
        time.sleep(2)
        done = deploy_step.run(env.ctx(), environment=ENV, image=env.v2)
        time.sleep(2)
        samples = load.stop()
    assert done.record is not None and done.record.outcome == "succeeded"
    assert done.record.strategy == "swarm-rolling"
    assert env.images() == [env.v2] * 3
    assert len(samples) > RATE * 10
    assert failures(samples) == []


def test_an_unhealthy_release_is_stopped_and_the_old_one_serves(env: Env) -> None:
    with env.load() as load:
        with pytest.raises(DeployError) as raised:
            deploy_step.run(env.ctx(), environment=ENV, image=env.broken)
        samples = load.stop()
    assert "Swarm rolled the update back" in (raised.value.untouched or "")
    assert env.images() == [env.v2] * 3
    assert failures(samples) == []
    assert raised.value.facts.get("release")
    assert env.broken in raised.value.message


def test_a_rollback_goes_back_to_the_earlier_release_losing_no_request(env: Env) -> None:
    with env.load() as load:
        time.sleep(2)
        back = rollback_step.run(env.ctx(), environment=ENV)
        time.sleep(2)
        samples = load.stop()
    assert back.outcome == "succeeded"
    assert back.image == env.v1
    assert env.images() == [env.v1] * 3
    assert failures(samples) == []


def test_a_contracting_release_is_refused_a_rolling_update_and_undone_when_unhealthy(
    env: Env,
) -> None:
    env.sql("CREATE TABLE dtswd_legacy (id serial PRIMARY KEY, note text)")
    env.sql("INSERT INTO dtswd_legacy (note) SELECT 'n' || g FROM generate_series(1, 25) g")
    before = env.state()
    assert before["revision"] == "0002" and before["columns"] == "id,note"
    # Asked for a rolling update, it is refused: the old tasks would read the dropped column.
    with pytest.raises(UsageError, match="NOT expand-only"):
        deploy_step.run(env.ctx(), environment=ENV, image=env.contract, strategy="rolling")
    assert env.images() == [env.v1] * 3
    # auto -> recreate: stopped, migrated (0003 drops the column), the new tasks never
    # healthy: stopped, the data restored, the old image back at its 3 replicas.
    with pytest.raises(DeployError) as raised:
        deploy_step.run(env.ctx(), environment=ENV, image=env.contract_broken)
    left = raised.value.untouched or ""
    assert f"{env.v1} serves again at 3 replicas" in left
    assert "database restored from" in left
    assert env.contract_broken in raised.value.message
    assert env.images() == [env.v1] * 3
    assert env.state() == before
    history = [r for r in env.releases() if r.image == env.contract_broken]
    assert history and history[-1].outcome == "rolled-back"
    assert history[-1].strategy == "swarm-recreate" and history[-1].restored_backup


def test_auto_recreates_a_contracting_release_and_keeps_the_rows(env: Env) -> None:
    before = env.state()
    done = deploy_step.run(env.ctx(), environment=ENV, image=env.contract)
    assert done.record is not None and done.record.outcome == "succeeded"
    assert done.record.strategy == "swarm-recreate"
    assert done.record.strategy_asked == "auto"
    assert "not expand-only" in (done.record.strategy_reason or "")
    assert set(done.record.timings) >= {"backup", "stop", "migrate", "start", "healthy"}
    assert done.record.backup_id
    assert env.images() == [env.contract] * 3
    after = env.state()
    assert after == {**before, "revision": "0003", "columns": "id"}
