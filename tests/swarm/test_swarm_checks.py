"""The check steps on a real 3-node Swarm (`platform = "swarm"`), through the CLI, against the
stack's published endpoint (deploytools' proxy on the manager):

- smoke, validate and verify pass, the database check asking a task's container for the
  migration heads on its node, and verify reads CPU and memory of each of the 3 tasks, named
  with their nodes;
- a short monitor passes, with the same per-task figures;
- a monitor whose memory limit every task exceeds breaches, exits 1 and names the tasks.

One stack (dtswc1, the proxy on port 18410) for the module, deployed once as a team brings a
stack up by hand; the tests only read it.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploytools import proxy_settings, proxy_swarm
from deploytools.cli import cli
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.steps import deploy_swarm
from tests.helpers.stacks import PROXY_IMAGE, ReleaseImages
from tests.helpers.swarm_cluster import SwarmCluster, SwarmClusterError

STACK = "dtswc1"
PORT = 18410
ENV = "prod"
REPO_ROOT = Path(__file__).resolve().parents[2]

#: The app and its database; deploytools' proxy fronts the app on Swarm.
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
    image: ${APP_IMAGE:-rbac-api-test:1.15.2}
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
volumes:
  db-data:
"""

#: The runbook's thresholds, loosened where they measure this shared 2-core machine rather than
#: the Swarm path (the latency through a proxy and an overlay on docker-in-docker nodes).
THRESHOLDS = """
[thresholds]
health_ms = 500.0
api_p95_ms = 2000.0
database_latency_ms = 500.0
cpu_percent = 90.0
memory_mb = 500.0
"""


def checks_tables() -> str:
    """The repository's [checks] (the reference service's checks), its load tests shortened
    (the latency is not what this module tests; 120 samples still reach min_samples)."""
    text = (REPO_ROOT / "deploy.toml").read_text(encoding="utf-8")
    checks = text[text.index("\n[checks]\n") :]
    assert checks.count("duration_s = 15.0") == 1
    return checks.replace("duration_s = 15.0", "duration_s = 6.0")


def write_config(path: Path, cluster: SwarmCluster, postgres_image: str, **thresholds: str) -> None:
    (path.parent / "docker-compose.yml").write_text(COMPOSE, encoding="utf-8")
    variables = {
        "POSTGRES_IMAGE": postgres_image,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
        "APP_SECRET_KEY": secrets.token_urlsafe(32),
    }
    table = ", ".join(f'{k} = "{v}"' for k, v in variables.items())
    limits = THRESHOLDS
    for key, value in thresholds.items():
        limits = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", limits)
    path.write_text(
        f"""
[project]
name = "svc"
image_repository = "rbac-api-test"
compose_files = ["docker-compose.yml"]
app_service = "app"
database_service = "db"
migration_command = ["alembic", "-c", "/app/alembic.ini", "upgrade", "head"]

[environments.{ENV}]
docker_host = "{cluster.manager.docker_host}"
compose_project = "{STACK}"
base_url = "http://{cluster.manager.address}:{PORT}"
platform = "swarm"
variables = {{ {table} }}

[environments.{ENV}.swarm]
node_host = "tcp://{{addr}}:2375"
replicas = 3

[backups]
store = "volume:{STACK}-backups"
{limits}{checks_tables()}""",
        encoding="utf-8",
    )


@dataclass
class Env:
    cluster: SwarmCluster
    config: Path
    environ: dict[str, str]
    postgres_image: str

    def platform(self) -> SwarmPlatform:
        platform = StepContext(config=load_config(self.config)).platform(ENV)
        assert isinstance(platform, SwarmPlatform)
        return platform

    def cli(self, *args: str, config: Path | None = None) -> tuple[int, dict[str, Any]]:
        """`deploytools --json ARGS`: its exit code and its JSON document."""
        argv = ["--config", str(config or self.config), "--json", *args]
        invoked = CliRunner().invoke(cli, argv, env=self.environ)
        try:
            return invoked.exit_code, json.loads(invoked.stdout)
        except ValueError:
            raise AssertionError(f"no JSON from {argv}: {invoked.output[-2000:]}") from None

    def task_nodes(self) -> list[str]:
        tasks = self.platform().tasks("app", desired_state="running")
        return sorted(t.node for t in tasks if t.running)


def wait_for(what: str, probe: Any, *, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(1)


def remove_stack(cluster: SwarmCluster) -> None:
    """The stack, deploytools' proxy and store helper (named after it), and what is left of
    them on each node (volumes included)."""
    manager = cluster.manager

    def names() -> list[str]:
        found = cluster.docker(manager, "service", "ls", "--format", "{{.Name}}").split()
        return [s for s in found if s.startswith(f"{STACK}_")]

    for name in cluster.docker(manager, "ps", "-aq", "--filter", f"name=^{STACK}-").split():
        cluster.docker(manager, "rm", "-f", "-v", name)
    if names():
        cluster.docker(manager, "stack", "rm", STACK)
    wait_for("the stack's services to go", lambda: not names(), timeout_s=60)
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
            # A node another module stopped: the next run's clean-up gets to it.
            print(f"clean-up of {STACK} on {node.name}: {error}", file=sys.stderr)


@pytest.fixture(scope="module")
def env(
    swarm_cluster: SwarmCluster,
    postgres_image: str,
    release_images: ReleaseImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    app = release_images["1.15.2"]
    swarm_cluster.load_images(postgres_image, PROXY_IMAGE, app)
    config = tmp_path_factory.mktemp("dtswc") / "deploy.toml"
    write_config(config, swarm_cluster, postgres_image)
    admin = ("admin", secrets.token_urlsafe(18))
    environ = {
        "ADMIN_USERNAME": admin[0],
        "ADMIN_PASSWORD": admin[1],
        "CHECK_VIEWER_USERNAME": "dtswc-viewer",
        "CHECK_VIEWER_PASSWORD": secrets.token_urlsafe(16),
        "CHECK_EDITOR_USERNAME": "dtswc-editor",
        "CHECK_EDITOR_PASSWORD": secrets.token_urlsafe(16),
    }
    made = Env(swarm_cluster, config, environ, postgres_image)
    remove_stack(swarm_cluster)
    try:
        # As a team brings a stack up by hand: the database, the schema and the admin (jobs
        # on the stack's network), the stack, deploytools' proxy.
        platform = made.platform()
        platform.start(["db"], what="starting the database")
        wait_for("the database task", lambda: platform.running("db"))
        for command, extra in [
            (["alembic", "-c", "/app/alembic.ini", "upgrade", "head"], {}),
            (["python3", "-m", "rbac_api.create_admin"], dict(zip(environ, admin, strict=False))),
        ]:
            done = platform.run_once(
                "app",
                command,
                env={"APP_IMAGE": app},
                container_env=extra,
                timeout_s=180,
                what=" ".join(command[:3]),
            )
            assert done.returncode == 0, done.stdout
        platform.deploy_stack({"APP_IMAGE": app}, what="the first release")
        wait_for("3 running tasks", lambda: len(made.task_nodes()) == 3)
        resolved = proxy_settings.resolve(platform.config, platform.environment)
        proxy_swarm.ensure_running(
            platform.manager, deploy_swarm.proxy_spec(platform, resolved), timeout_s=60
        )
        yield made
    finally:
        remove_stack(swarm_cluster)


def usage_by_task(results: list[dict[str, Any]], kind: str) -> dict[str, str]:
    """ "cpu NAME on NODE" results -> {NODE: measured}."""
    found = {}
    for result in results:
        match = re.fullmatch(rf"{kind} {STACK}_app\.\d\.\w+ on (\S+)", result["name"])
        if match:
            found[match.group(1)] = result["measured"]
    return found


def test_smoke_validate_and_verify_pass_and_verify_reads_every_task(env: Env) -> None:
    nodes = env.task_nodes()
    assert len(set(nodes)) == 3, nodes  # one task on each node: Swarm spreads them
    for suite in ("smoke", "validate", "verify"):
        code, out = env.cli(suite, "--env", ENV)
        report = out["result"] if out["ok"] else out["error"]["facts"]["report"]
        failing = [r for r in report["results"] if r["verdict"] != "pass"]
        assert (code, report["verdict"], failing) == (0, "pass", []), suite
        names = {r["name"] for r in report["results"]}
        assert "database connected" in names and "login works" in names, suite
    # verify's last report: the revision asked in a task's container, each task's logs, and
    # CPU and memory for each of the 3 tasks, named with the node it runs on.
    assert {"database migrated", "api p95"} <= names
    assert len([n for n in names if n.startswith(f"logs: no errors in {STACK}_app.")]) == 3
    cpu, memory = (
        usage_by_task(report["results"], "cpu"),
        usage_by_task(report["results"], "memory"),
    )
    assert sorted(cpu) == sorted(memory) == nodes
    assert all(re.fullmatch(r"\d+\.\d%", v) for v in cpu.values()), cpu
    megabytes = [int(v.removesuffix(" MB")) for v in memory.values()]
    assert all(mb > 0 for mb in megabytes), memory


def test_a_short_monitor_passes_with_every_task_watched(env: Env, tmp_path: Path) -> None:
    # The login probe alone each sample (not the health probe's 7 requests as well): a sample
    # is then 2 requests, and the proxy's round robin sends successive scrapes to different
    # replicas, as a service's other traffic would.
    watch = tmp_path / "deploy.toml"
    text = env.config.read_text(encoding="utf-8")
    both = 'suites = ["smoke", "validate", "verify", "monitor"]'
    assert text.count(both) == 2  # the health probe's, then the login probe's
    watch.write_text(text.replace(both, 'suites = ["smoke"]', 1), encoding="utf-8")
    (tmp_path / "docker-compose.yml").write_text(COMPOSE, encoding="utf-8")
    code, out = env.cli("monitor", "--env", ENV, "--duration", "4", "--interval", "1", config=watch)
    report = out["result"] if out["ok"] else out["error"]["facts"]["report"]
    assert (code, report["verdict"], report["breaches"]) == (0, "pass", [])
    assert report["samples"] == 4
    # Each task's CPU and memory tracked over the watch, by task and node.
    watched = usage_by_task(report["results"], "memory")
    assert sorted(watched) == env.task_nodes()
    assert all(v == "0 failed of 4 samples, longest run 0" for v in watched.values()), watched
    # A metrics window is two scrapes of the same replica (through the proxy each scrape
    # reaches one, and another's counters are no continuation of its): the logins judged are
    # the watch's own (its "login works" probe, once a sample), never all those a replica
    # served since smoke, validate and verify ran.
    auth = [r for s in report["sample_log"] for r in s["results"] if r["name"] == "auth success"]
    auth += [r for r in report["results"] if r["name"] == "over the watch: auth success"]
    judged = [r["data"]["n"] for r in auth if r["data"] and "n" in r["data"]]
    assert len(auth) == 5 and all(n <= report["samples"] for n in judged), auth


def test_a_monitor_over_its_memory_limit_breaches_naming_the_tasks(
    env: Env, tmp_path: Path
) -> None:
    """Every task uses more than 1 MB: memory fails each sample, a breach after 3 in a row."""
    tight = tmp_path / "deploy.toml"
    # The stack's variables are not read by monitor: this file's own passwords do not matter.
    write_config(tight, env.cluster, env.postgres_image, memory_mb="1.0")
    code, out = env.cli("monitor", "--env", ENV, "--duration", "8", "--interval", "1", config=tight)
    assert code == 1 and not out["ok"], out
    assert out["error"]["exit_code"] == 1
    report = out["error"]["facts"]["report"]
    assert report["verdict"] == "fail" and report["samples"] == 3
    memory = [b.split(":")[0] for b in report["breaches"] if b.startswith("memory ")]
    nodes = [re.fullmatch(rf"memory {STACK}_app\.\d\.\w+ on (\S+)", name) for name in memory]
    assert all(nodes), report["breaches"]
    assert sorted(m.group(1) for m in nodes if m) == env.task_nodes()
    assert not out["error"]["facts"]["rolled_back"]
