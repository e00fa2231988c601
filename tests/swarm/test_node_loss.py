"""A node stopped in the middle of a release on a real 3-node Swarm (issue 21's done-criterion):
`deploytools deploy` of the next release runs while the load goes through deploytools' proxy,
and a node that holds an app task (not the database's, not the manager deploytools talks to)
is stopped once the update has begun. Afterwards: the deploy finished or rolled back (its exit
code and record agree and say why), every row written before is there, every running app task
runs one image, and the endpoint answers.

Stack dtswl1, the proxy on port 18410.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from deploytools import proxy_settings, proxy_swarm
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.steps import deploy_swarm
from tests.helpers.load import LoadProcess, failures
from tests.helpers.shared_stack import build_variant
from tests.helpers.stacks import PROXY_IMAGE, ReleaseImages
from tests.helpers.swarm_cluster import SwarmCluster, SwarmClusterError, SwarmNode
from tests.swarm.test_swarm_deploy_rollback import COMPOSE, wait_for

STACK = "dtswl1"
PORT = 18410
ENV = "prod"
RATE = 20.0
ROWS = 200  # the INSERT below writes ids 1..200
V2_TAG = "rbac-api-test:dtswl-1.15.2-expand-only"
CLI = Path(sys.executable).parent / "deploytools"


@dataclass
class Env:
    cluster: SwarmCluster
    config: Path
    v1: str
    v2: str

    def platform(self) -> SwarmPlatform:
        platform = StepContext(config=load_config(self.config)).platform(ENV)
        assert isinstance(platform, SwarmPlatform)
        return platform

    def images(self) -> list[str]:
        tasks = self.platform().tasks("app", desired_state="running")
        return sorted(t.image for t in tasks if t.running)

    def psql(self, sql: str) -> str:
        result = self.platform().exec_in_service(
            "db", ["psql", "-U", "rbac", "-d", "rbac", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]
        )
        assert result.exit_code == 0, result.stderr.decode("utf-8", "replace")
        return result.text().strip()

    def cli(self, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), "--config", str(self.config), "--json", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


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


def remove_stack(cluster: SwarmCluster) -> None:
    control = cluster.control_node()
    for name in cluster.docker(control, "ps", "-aq", "--filter", f"name=^{STACK}-").split():
        cluster.docker(control, "rm", "-f", "-v", name)
    services = cluster.docker(control, "service", "ls", "--format", "{{.Name}}").split()
    if any(s.startswith(f"{STACK}_") for s in services):
        cluster.docker(control, "stack", "rm", STACK)
    wait_for(
        "the stack's services to go",
        lambda: (
            not any(
                s.startswith(f"{STACK}_")
                for s in cluster.docker(control, "service", "ls", "--format", "{{.Name}}").split()
            )
        ),
        timeout_s=60,
    )
    for node in cluster.nodes:
        try:
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
            print(f"clean-up of {STACK} on {node.name}: {error}", file=sys.stderr)


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
    swarm_cluster.load_images(postgres_image, PROXY_IMAGE, v1, v2)
    config = tmp_path_factory.mktemp("dtswl") / "deploy.toml"
    write_config(config, swarm_cluster, postgres_image)
    made = Env(swarm_cluster, config, v1, v2)
    remove_stack(swarm_cluster)
    try:
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
        resolved = proxy_settings.resolve(platform.config, platform.environment)
        proxy_swarm.ensure_running(
            platform.manager, deploy_swarm.proxy_spec(platform, resolved), timeout_s=60
        )
        yield made
    finally:
        remove_stack(swarm_cluster)
        docker_client.api.remove_image(V2_TAG, force=True)


def victim(env: Env) -> SwarmNode:
    """A node that runs an app task, not the database's, and is not the manager deploytools
    talks to (nodes[0], where the proxy runs too)."""
    platform = env.platform()
    db_nodes = {t.node for t in platform.tasks("db", desired_state="running")}
    app_nodes = {t.node for t in platform.tasks("app", desired_state="running") if t.running}
    for node in env.cluster.nodes[1:]:
        if node.name not in db_nodes and node.name in app_nodes:
            return node
    raise AssertionError(f"no node to stop: db on {db_nodes}, app on {app_nodes}")


def answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def test_a_node_stopped_mid_release_loses_no_row_and_one_release_serves(env: Env) -> None:
    env.psql("CREATE TABLE IF NOT EXISTS dtswl_rows (id int PRIMARY KEY, note text NOT NULL)")
    env.psql(
        "INSERT INTO dtswl_rows SELECT g, md5(g::text) FROM generate_series(1, 200) g "
        "ON CONFLICT DO NOTHING"
    )
    before = env.psql("SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM dtswl_rows")
    stopped = victim(env)
    platform = env.platform()
    cluster = env.cluster
    started = time.monotonic()
    with LoadProcess(PORT, rate_per_s=RATE, hosts=(cluster.manager.address,)) as load:
        deploy = subprocess.Popen(
            [
                str(CLI),
                "--config",
                str(env.config),
                "--json",
                "deploy",
                "--env",
                ENV,
                "--image",
                env.v2,
                "--yes",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # The update has begun: a task of the new release exists.
            wait_for(
                "the first task of the new release",
                lambda: (
                    deploy.poll() is None and any(t.image == env.v2 for t in platform.tasks("app"))
                ),
                timeout_s=600,
            )
            stopped_at = time.monotonic() - started
            cluster.stop_node(stopped)
            try:
                out, err = deploy.communicate(timeout=900)
            finally:
                finished = time.monotonic() - started
        finally:
            if deploy.poll() is None:
                deploy.kill()
                deploy.communicate()
        samples = load.stop()
    try:
        print(
            f"node {stopped.name} stopped at {stopped_at:.1f} s; deploy exit {deploy.returncode} "
            f"after {finished:.1f} s; {len(failures(samples))} of {len(samples)} requests failed",
            file=sys.stderr,
        )
        print(out, err, file=sys.stderr)
        history = env.cli("history", "--env", ENV, "--limit", "1")
        assert history.returncode == 0, history.stdout + history.stderr
        record = json.loads(history.stdout)
        print(json.dumps(record, indent=1)[:3000], file=sys.stderr)
        text = json.dumps(record)
        if deploy.returncode == 0:
            assert '"succeeded"' in text
            serving = env.v2
        else:
            error = json.loads(out)["error"]
            assert error["message"] and error["untouched"], error
            serving = env.v2 if env.v2 in (error.get("untouched") or "") else None
        # Every running app task runs one image, the new or the old.
        images = wait_for(
            "the app tasks on one image",
            lambda: (lambda i: i if i and len(set(i)) == 1 else None)(env.images()),
            timeout_s=180,
        )
        assert images[0] in (env.v1, env.v2)
        if serving is not None:
            assert images[0] == serving
        # No row lost.
        after = env.psql("SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM dtswl_rows")
        assert after == before
        assert after.startswith(f"{ROWS}|")
        # The endpoint answers.
        assert wait_for(
            "the endpoint",
            lambda: answers(f"http://{cluster.manager.address}:{PORT}"),
            timeout_s=60,
        )
    finally:
        cluster.start_node(stopped)
