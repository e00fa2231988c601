"""A node stopped in the middle of a release on a real 3-node Swarm (issue 21's done-criterion):
`deploytools deploy` of the next release runs while the load goes through deploytools' proxy,
and once the update has begun the node of its first new task is stopped (or, when that is
the manager deploytools talks to or the database's node, another that runs an app task).
Afterwards: the deploy finished or rolled back (its exit code and record agree and say why,
and the record names the node), every row written before is there, every running app task
runs one image, the endpoint answers, and no migration job's container is left on a node.

A node drained mid-release is held to the same. Measured (3 nodes, 20 req/s through the
proxy): a stopped node leaves Swarm's update "in progress" for good (the new task on the lost
node stays Starting/Shutdown and the updater waits for it); deploytools' watch ends it once
the manager sees the node down, and Swarm's rollback puts the old release back; a drain makes
Swarm pause the update, and deploytools rolls it back at once. The release record names the
node (went down / was drained) beside its outcome. Both cases share one stack.

Stack dtswl1, the proxy on port 18410.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
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
V3_TAG = "rbac-api-test:dtswl-1.15.2-again"
CLI = Path(sys.executable).parent / "deploytools"


@dataclass
class Env:
    cluster: SwarmCluster
    config: Path
    v1: str
    v2: str
    v3: str

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


def job_containers(cluster: SwarmCluster, *, skip: Sequence[SwarmNode] = ()) -> list[str]:
    """The containers of deploytools' jobs (the migrations) on every node but `skip` (the
    stopped ones): none once `run_once` returned."""
    found: list[str] = []
    for node in cluster.nodes:
        if node in skip:
            continue
        names = cluster.docker(
            node, "ps", "-a", "--filter", f"name={STACK}_app-job-", "--format", "{{.Names}}"
        )
        found += [f"{node.name}: {name}" for name in names.split()]
    return found


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
health_timeout_s = 60.0
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
            # What is left of the services on a node (an exited task's container) would stay
            # until Swarm's task reaper gets to it, minutes on this cluster: removed now.
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
                timeout_s=60,
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
    # The same release again under another image ID: a next release for the drain test.
    v3 = build_variant(docker_client, v2, V3_TAG, dockerfile='LABEL dtswl.build="3"\n', files={})
    swarm_cluster.load_images(postgres_image, PROXY_IMAGE, v1, v2, v3)
    config = tmp_path_factory.mktemp("dtswl") / "deploy.toml"
    write_config(config, swarm_cluster, postgres_image)
    made = Env(swarm_cluster, config, v1, v2, v3)
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
        assert job_containers(swarm_cluster) == []  # the job's exited container went with it
        platform.deploy_stack({"APP_IMAGE": v1}, what="the first release")
        wait_for("3 tasks of the first release", lambda: made.images() == [v1] * 3)
        resolved = proxy_settings.resolve(platform.config, platform.environment)
        proxy_swarm.ensure_running(
            platform.manager, deploy_swarm.proxy_spec(platform, resolved), timeout_s=60
        )
        yield made
    finally:
        remove_stack(swarm_cluster)
        for tag in (V3_TAG, V2_TAG):
            docker_client.api.remove_image(tag, force=True)


def victim(env: Env, *, with_app_task: bool = True) -> SwarmNode:
    """A node that runs an app task (`with_app_task`), not the database's, and is not the
    manager deploytools talks to (nodes[0], where the proxy runs too)."""
    platform = env.platform()
    db_nodes = {t.node for t in platform.tasks("db", desired_state="running")}
    app_nodes = {t.node for t in platform.tasks("app", desired_state="running") if t.running}
    for node in env.cluster.nodes[1:]:
        if node.name not in db_nodes and (node.name in app_nodes or not with_app_task):
            return node
    raise AssertionError(f"no node to stop: db on {db_nodes}, app on {app_nodes}")


def answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


ROWS_SQL = "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM dtswl_rows"


def release_under(
    env: Env,
    image: str,
    choose: Callable[[list[SwarmNode]], SwarmNode],
    disrupt: Callable[[SwarmNode], None],
) -> tuple[subprocess.CompletedProcess[str], SwarmNode, float, float, int, int]:
    """`deploytools deploy` of `image` under load; once its update began (a task of `image`
    is on a node), `disrupt` the node `choose` picks from the nodes of the new tasks. The
    deploy's process, that node, when it was disrupted and when the deploy ended (s from its
    start), the failed and the total requests."""
    platform = env.platform()
    argv = [str(CLI), "--config", str(env.config), "--json", "deploy", "--env", ENV]
    argv += ["--image", image, "--yes"]
    by_name = {n.name: n for n in env.cluster.nodes}
    started = time.monotonic()
    with LoadProcess(PORT, rate_per_s=RATE, hosts=(env.cluster.manager.address,)) as load:
        deploy = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            placed = wait_for(
                "the first task of the new release on a node",
                lambda: (
                    [
                        by_name[t.node]
                        for t in platform.tasks("app", desired_state="running")
                        if t.image == image and t.node in by_name
                    ]
                    or None
                ),
                timeout_s=600,
            )
            assert deploy.poll() is None, "the deploy ended before the node could be disrupted"
            node = choose(placed)
            disrupted_at = time.monotonic() - started
            disrupt(node)
            out, err = deploy.communicate(timeout=900)
            finished = time.monotonic() - started
        finally:
            if deploy.poll() is None:
                deploy.kill()
                deploy.communicate()
        samples = load.stop()
    done = subprocess.CompletedProcess(argv, deploy.returncode, out, err)
    return done, node, disrupted_at, finished, len(failures(samples)), len(samples)


def check_after(
    env: Env, done: subprocess.CompletedProcess[str], new: str, old: str, *, event: str
) -> str:
    """The deploy finished or rolled back and its record says which, and names `event` (what
    befell the node); one image runs on every app task; the endpoint answers. The image that
    serves."""
    history = env.cli("history", "--env", ENV, "--limit", "1")
    assert history.returncode == 0, history.stdout + history.stderr
    (release,) = json.loads(history.stdout)["result"]["releases"]
    print(json.dumps(release, indent=1)[:3000], file=sys.stderr)
    assert release["kind"] == "deploy" and release["image"] == new
    assert any(event in note for note in release["notes"]), release["notes"]
    if done.returncode == 0:
        assert release["outcome"] == "succeeded"
        serving: str | None = new
    else:
        error = json.loads(done.stdout)["error"]
        assert error["message"] and error["untouched"], error
        assert event in error["message"], error  # the report says why
        assert release["outcome"] in ("rolled-back", "failed")
        assert release["error"] == error["message"].removeprefix(
            f"deploy of {new} to {ENV} failed: "
        )
        if release["outcome"] == "rolled-back":
            back = f"Swarm rolled the update back: {old} serves"
            assert any(n.startswith(back) for n in release["notes"]), release["notes"]
        serving = old if "rolled the update back" in error["untouched"] else None
    images = wait_for(
        "the app tasks on one image",
        lambda: (lambda i: i if len(i) == 3 and len(set(i)) == 1 else None)(env.images()),
        timeout_s=180,
    )
    assert images[0] in (new, old)
    if serving is not None:
        assert images[0] == serving
    url = f"http://{env.cluster.manager.address}:{PORT}"
    assert wait_for("the endpoint", lambda: answers(url), timeout_s=60)
    return str(images[0])


def test_a_node_stopped_mid_release_loses_no_row_and_one_release_serves(env: Env) -> None:
    env.psql("CREATE TABLE IF NOT EXISTS dtswl_rows (id int PRIMARY KEY, note text NOT NULL)")
    env.psql(
        "INSERT INTO dtswl_rows SELECT g, md5(g::text) FROM generate_series(1, 200) g "
        "ON CONFLICT DO NOTHING"
    )
    before = env.psql(ROWS_SQL)
    assert before.startswith(f"{ROWS}|")
    others = victim(env)
    db_nodes = {t.node for t in env.platform().tasks("db", desired_state="running")}

    def choose(placed: list[SwarmNode]) -> SwarmNode:
        # The node of a new task when it may be stopped: the update then has a task on a
        # node that went down (the hard case); else a node that runs an old one.
        for node in placed:
            if node != env.cluster.nodes[0] and node.name not in db_nodes:
                return node
        return others

    stopped: list[SwarmNode] = []

    def stop(node: SwarmNode) -> None:
        stopped.append(node)
        env.cluster.stop_node(node)

    old = env.images()[0]
    try:
        done, node, at, finished, failed, total = release_under(env, env.v2, choose, stop)
        print(
            f"STOP {node.name} at {at:.1f} s; deploy exit {done.returncode} after "
            f"{finished:.1f} s; {failed} of {total} requests failed\n{done.stdout}\n"
            f"{done.stderr[-3000:]}",
            file=sys.stderr,
        )
        serving = check_after(env, done, env.v2, old, event=f"node {node.name} went down")
        print(f"serving {serving}", file=sys.stderr)
        assert env.psql(ROWS_SQL) == before
        assert job_containers(env.cluster, skip=stopped) == []
    finally:
        for node in stopped:
            env.cluster.start_node(node)


def test_a_node_drained_mid_release_loses_no_row_and_one_release_serves(env: Env) -> None:
    before = env.psql(ROWS_SQL)
    assert before.startswith(f"{ROWS}|")
    # After the stop test the restarted node may run nothing; the update's new tasks go to
    # the emptiest node, so draining it once the update began still moves them.
    node = victim(env, with_app_task=False)
    old = env.images()[0]
    try:
        done, _, at, finished, failed, total = release_under(
            env, env.v3, lambda placed: node, env.cluster.drain
        )
        print(
            f"DRAIN {node.name} at {at:.1f} s; deploy exit {done.returncode} after "
            f"{finished:.1f} s; {failed} of {total} requests failed\n{done.stdout}\n"
            f"{done.stderr[-3000:]}",
            file=sys.stderr,
        )
        serving = check_after(env, done, env.v3, old, event=f"node {node.name} was drained")
        print(f"serving {serving}", file=sys.stderr)
        assert env.psql(ROWS_SQL) == before
        assert job_containers(env.cluster) == []
    finally:
        env.cluster.activate(node)
