"""The Swarm platform without a cluster: tasks and nodes read from the engine's answers, a
job's end turned into a result or an error, the stack rendered and deployed through the runner
(argv and stdin), a one-off run as a job of the service's spec, and ctx.platform choosing the
platform. tests/swarm/ runs the real thing on a 3-node cluster."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from deploytools.commands.compose import COMPOSE_V1, ComposeCli
from deploytools.config import parse_config
from deploytools.context import StepContext
from deploytools.engine.client import Engine
from deploytools.engine.errors import EngineAPIError
from deploytools.engine.process import ProcessResult
from deploytools.engine.swarm import (
    JobResult,
    JobRun,
    JobSpec,
    NodeInfo,
    ServiceInfo,
    TaskState,
    task_state,
)
from deploytools.engine.swarm import _node as node_info
from deploytools.errors import (
    DeadlineExceeded,
    EnvironmentUnreachable,
    ExternalCommandFailed,
    UsageError,
)
from deploytools.platforms.swarm import SwarmPlatform, _job_outcome, clear_containers
from deploytools.session import EnvSession
from deploytools.target import Target
from tests.helpers.deploy_toml import MINIMAL

REPO_ROOT = Path(__file__).resolve().parents[2]

CONFIG = MINIMAL + textwrap.dedent(
    """
    [environments.prod]
    docker_host = "tcp://10.0.0.1:2375"
    compose_project = "dtswp9"
    base_url = "http://10.0.0.1:18100"
    platform = "swarm"
    secrets = ["POSTGRES_PASSWORD"]

    [environments.prod.swarm]
    node_host = "tcp://{addr}:2375"
    replicas = 2

    [deploy]
    migration_env = { LOCK_TIMEOUT = "5s" }
    """
)

NODES = {
    "n1": NodeInfo("n1", "node-1", "10.0.0.1", "manager", "active", "ready", leader=True),
    "n2": NodeInfo("n2", "node-2", "10.0.0.2", "worker", "active", "ready"),
}

TASK = {
    "ID": "t1abc",
    "ServiceID": "s1",
    "Slot": 2,
    "NodeID": "n2",
    "DesiredState": "running",
    "CreatedAt": "2026-12-07T06:00:00Z",
    "UpdatedAt": "2026-12-07T06:00:05Z",
    "Spec": {"ContainerSpec": {"Image": "svc:2"}},
    "Status": {
        "State": "running",
        "Message": "started",
        "ContainerStatus": {"ContainerID": "c0ffee", "PID": 12, "ExitCode": 0},
    },
    "NetworksAttachments": [
        {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.255.0.5/16"]},
        {"Network": {"Spec": {"Name": "dtswp9_default"}}, "Addresses": ["10.0.1.7/24"]},
    ],
}


def test_a_task_is_read_with_its_node_and_its_address_on_the_stack_network() -> None:
    state = task_state(TASK, service="dtswp9_app", nodes=NODES, network="dtswp9_default")
    assert state == TaskState(
        id="t1abc",
        service="dtswp9_app",
        slot=2,
        node_id="n2",
        node="node-2",
        state="running",
        desired_state="running",
        image="svc:2",
        container_id="c0ffee",
        address="10.0.1.7",
        error="",
        message="started",
        exit_code=None,  # a running task has none yet, whatever the engine says
        created_at="2026-12-07T06:00:00Z",
        updated_at="2026-12-07T06:00:05Z",
    )
    assert state.running and not state.final


def test_a_failed_task_has_its_exit_code_and_error() -> None:
    failed = {
        **TASK,
        "Status": {
            "State": "failed",
            "Err": "task: non-zero exit (1)",
            "ContainerStatus": {"ContainerID": "c0ffee", "ExitCode": 1},
        },
    }
    state = task_state(failed, service="s", nodes={}, network="")
    assert (state.state, state.exit_code, state.error, state.node, state.address) == (
        "failed",
        1,
        "task: non-zero exit (1)",
        "",
        "",
    )
    assert state.final


def test_a_manager_reporting_0_0_0_0_is_reached_at_its_manager_address() -> None:
    raw = {
        "ID": "n1",
        "Description": {"Hostname": "m1"},
        "Status": {"State": "ready", "Addr": "0.0.0.0"},  # noqa: S104 - what the engine says
        "Spec": {"Role": "manager", "Availability": "drain"},
        "ManagerStatus": {"Leader": True, "Addr": "192.168.1.4:2377"},
    }
    assert node_info(raw) == NodeInfo("n1", "m1", "192.168.1.4", "manager", "drain", "ready", True)


class FakeSwarm:
    """What SwarmPlatform asks of engine.swarm.Swarm, answered from memory."""

    def __init__(self, services: Mapping[str, ServiceInfo] | None = None) -> None:
        self.known = dict(services or {})
        self.jobs: list[JobSpec] = []
        self.outcome = JobResult("job", 0, "complete", "", "INFO ok\n", "node-2")
        self.removed: list[str] = []
        #: The nodes the job's tasks went to (node IDs of NODES).
        self.job_nodes: list[str] = []
        self.events: list[str] = []

    def service(self, name: str) -> ServiceInfo | None:
        return self.known.get(name)

    def nodes(self) -> list[NodeInfo]:
        return list(NODES.values())

    def run_job(self, spec: JobSpec) -> Any:
        self.jobs.append(spec)
        swarm = self

        class Run:
            def wait(self, *, timeout_s: float) -> JobResult:
                return swarm.outcome

            def tasks(self) -> list[TaskState]:
                return [
                    TaskState(
                        f"t{i}", spec.name, 1, node_id, NODES[node_id].hostname, "complete",
                        "complete", spec.image, f"c{i}", "", "", "", 0, "", "",
                    )
                    for i, node_id in enumerate(swarm.job_nodes)
                ]  # fmt: skip

            def remove(self) -> None:
                swarm.removed.append(spec.name)
                swarm.events.append(f"service {spec.name} removed")

        return Run()


class NodeEngine:
    """A node's engine: the containers it keeps, by their labels; `stuck` ones refuse to go
    (`remove` fails, as while the node's agent removes it)."""

    def __init__(self, node: str, events: list[str]) -> None:
        self.node = node
        self.events = events
        self.kept: dict[str, dict[str, str]] = {}
        self.stuck: set[str] = set()

    def containers(self, *, labels: Sequence[str] = (), all: bool = True) -> list[Any]:
        wanted = dict(label.split("=", 1) for label in labels)
        engine = self

        class Kept:
            def __init__(self, name: str) -> None:
                self.name = name

            def remove(self, *, force: bool = False) -> None:
                assert force
                if self.name in engine.stuck:
                    raise EngineAPIError("conflict", explanation="removal already in progress")
                del engine.kept[self.name]
                engine.events.append(f"container {self.name} removed on {engine.node}")

        return [Kept(name) for name, kept in self.kept.items() if wanted.items() <= kept.items()]


class Recorder:
    """A runner: `docker-compose config` answers MODEL, everything else succeeds."""

    def __init__(self, model: Mapping[str, Any]) -> None:
        self.model = model
        self.calls: list[tuple[list[str], dict[str, str], str | None]] = []

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float,
        cwd: str | None = None,
        input: str | None = None,
    ) -> ProcessResult:
        self.calls.append((list(argv), dict(env), input))
        out = yaml.safe_dump(dict(self.model)) if argv[-1] == "config" else ""
        return ProcessResult(tuple(argv), 0, out, "")


MODEL = {
    "services": {
        "app": {
            "image": "svc:1",
            "environment": {"DATABASE_HOST": "db", "POSTGRES_PASSWORD": "s3cret-pw"},
            "depends_on": ["db"],
        },
        "db": {"image": "postgres:16", "restart": "always"},
    }
}


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SwarmPlatform:
    (tmp_path / "docker-compose.prod.yml").write_text("services: {}\n")
    config = parse_config(CONFIG, tmp_path / "deploy.toml")
    made = SwarmPlatform(config=config, environment=config.environment("prod"))
    made.runner = Recorder(MODEL)
    fake = FakeSwarm(
        {"dtswp9_db": ServiceInfo("s2", "dtswp9_db", "postgres:15@sha256:ab", "replicated", 1)}
    )
    monkeypatch.setattr(SwarmPlatform, "swarm", property(lambda self: fake))
    monkeypatch.setattr(SwarmPlatform, "network", lambda self: "dtswp9_default")
    v1 = ComposeCli(COMPOSE_V1, "1.29.2")
    monkeypatch.setattr("deploytools.target.detect_compose", lambda host: v1)
    return made


def test_the_stack_is_rendered_and_deployed_through_stdin(platform: SwarmPlatform) -> None:
    platform.deploy_stack({"APP_IMAGE": "svc:2"}, what="deploying")
    runner = platform.runner
    assert isinstance(runner, Recorder)
    (config_argv, config_env, _), (deploy_argv, deploy_env, stdin) = runner.calls
    assert config_argv[0] == "docker-compose" and config_argv[-1] == "config"
    assert config_env["APP_IMAGE"] == "svc:2"
    assert deploy_argv == [
        "docker",
        "stack",
        "deploy",
        "--compose-file",
        "-",
        "--resolve-image",
        "never",
        "dtswp9",
    ]
    assert deploy_env["DOCKER_HOST"] == "tcp://10.0.0.1:2375"
    assert stdin is not None
    sent = yaml.safe_load(stdin)
    assert sent["version"] == "3.8"
    assert sent["services"]["app"]["deploy"]["replicas"] == 2
    assert sent["services"]["db"]["image"] == "postgres:16"
    assert "s3cret-pw" not in " ".join(deploy_argv)


def test_starting_some_services_keeps_the_others_image_or_leaves_them_out(
    platform: SwarmPlatform,
) -> None:
    platform.start(["app"], env={"APP_IMAGE": "svc:2"}, what="starting app")
    stdin = platform.runner.calls[-1][2]  # type: ignore[attr-defined]
    sent = yaml.safe_load(stdin)
    assert sent["services"]["db"]["image"] == "postgres:15@sha256:ab"  # as it runs
    platform.swarm.known.clear()  # type: ignore[attr-defined]
    platform.start(["db"], what="starting db")
    sent = yaml.safe_load(platform.runner.calls[-1][2])  # type: ignore[attr-defined]
    assert list(sent["services"]) == ["db"]  # the app is not created by starting the database


def test_run_once_is_a_job_of_the_services_spec_on_the_stack_network(
    platform: SwarmPlatform,
) -> None:
    done = platform.run_once(
        "app",
        ["alembic", "upgrade", "head"],
        env={"APP_IMAGE": "svc:2"},
        container_env={"LOCK_TIMEOUT": "5s"},
        timeout_s=60,
        what="the migration",
    )
    swarm: Any = platform.swarm
    (job,) = swarm.jobs
    assert job.name.startswith("dtswp9_app-job-")
    assert job.image == "svc:1"  # the Recorder's model: what Compose rendered
    assert job.args == ["alembic", "upgrade", "head"]
    assert job.entrypoint is None
    assert job.network == "dtswp9_default"
    assert job.env == {
        "DATABASE_HOST": "db",
        "POSTGRES_PASSWORD": "s3cret-pw",
        "LOCK_TIMEOUT": "5s",
    }
    assert job.labels == {"com.docker.stack.namespace": "dtswp9"}
    assert swarm.removed == [job.name]
    assert (done.returncode, done.stdout) == (0, "INFO ok\n")


def test_run_once_removes_the_job_then_its_exited_container_on_its_node(
    platform: SwarmPlatform,
) -> None:
    swarm: Any = platform.swarm
    swarm.job_nodes = ["n2"]
    engines = {
        a: NodeEngine(a, swarm.events) for a in ("tcp://10.0.0.1:2375", "tcp://10.0.0.2:2375")
    }
    node_2 = engines["tcp://10.0.0.2:2375"]

    def connect(address: str) -> Any:
        # The job's container appears when its task ran: the name is known once the job is.
        (job,) = swarm.jobs
        node_2.kept[f"{job.name}.1.t0"] = {"com.docker.swarm.service.name": job.name}
        node_2.kept["dtswp9_app.1.xyz"] = {"com.docker.swarm.service.name": "dtswp9_app"}
        return engines[address]

    platform.connector = connect
    done = platform.run_once("app", ["alembic", "upgrade", "head"], timeout_s=60, what="m")
    (job,) = swarm.jobs
    assert swarm.events == [
        f"service {job.name} removed",
        f"container {job.name}.1.t0 removed on tcp://10.0.0.2:2375",
    ]
    assert list(node_2.kept) == ["dtswp9_app.1.xyz"]  # the stack's own task is not touched
    assert (done.returncode, done.stderr) == (0, "")


def test_a_job_container_that_will_not_go_is_named_in_the_result(
    platform: SwarmPlatform,
) -> None:
    swarm: Any = platform.swarm
    swarm.job_nodes = ["n1", "n2"]
    engine = NodeEngine("node-1", swarm.events)

    def connect(address: str) -> Any:
        if address == "tcp://10.0.0.2:2375":
            raise EnvironmentUnreachable("the engine at tcp://10.0.0.2:2375 does not answer")
        return engine

    platform.connector = connect
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    job_name = "dtswp9_app-job-x"
    engine.kept[job_name] = {"com.docker.swarm.service.name": job_name}
    engine.stuck.add(job_name)
    left = clear_containers(
        {"node-1": engine}, job_name, timeout_s=5, clock=lambda: now[0], sleep=sleep
    )
    assert left == [
        "on node node-1: still there 5 s after the job was removed "
        f"({job_name}: removal already in progress)"
    ]
    assert 5.0 <= now[0] < 5.5
    # run_once itself: node-2 does not answer, so what the job left there is said.
    done = platform.run_once("app", ["alembic"], timeout_s=5, what="m")
    assert done.returncode == 0
    assert done.stderr == (
        "the job's container was not removed on node node-2: "
        "the engine at tcp://10.0.0.2:2375 does not answer\n"
    )


def test_a_failed_job_raises_with_its_output_and_is_removed(platform: SwarmPlatform) -> None:
    swarm: Any = platform.swarm
    swarm.outcome = JobResult(
        "j", 1, "failed", "task: non-zero exit (1)", "INFO x\nFAILED: boom\n", "node-2"
    )
    with pytest.raises(ExternalCommandFailed) as caught:
        platform.run_once("app", ["alembic"], timeout_s=5, what="the migration")
    assert caught.value.message == (
        "the migration failed on environment prod (exit 1, task failed): task: non-zero exit (1)"
    )
    assert caught.value.facts["stdout"] == "INFO x\nFAILED: boom\n"
    assert caught.value.facts["node"] == "node-2"
    assert len(swarm.removed) == 1


def test_a_job_past_its_deadline_is_a_deadline_error() -> None:
    result = JobResult("j", None, "running", "", "still going", "node-1", timed_out=True)
    with pytest.raises(DeadlineExceeded) as caught:
        _job_outcome(result, argv=("docker",), what="the migration", environment="prod")
    assert caught.value.message == (
        "the migration did not finish within its deadline on environment prod "
        "(its task: running); the job was removed"
    )


def test_a_job_waits_until_its_task_ends() -> None:
    states = iter(["pending", "running", "complete"])

    class Tasks:
        def tasks(self, name: str) -> list[TaskState]:
            state = next(states)
            return [
                TaskState(
                    "t", name, 1, "n1", "node-1", state, "complete", "svc:1", "c", "", "",
                    "", 0 if state == "complete" else None, "", "",
                )
            ]  # fmt: skip

    run = JobRun(Tasks(), "job")  # type: ignore[arg-type]
    run.logs = lambda: "done"  # type: ignore[method-assign]
    result = run.wait(timeout_s=10, sleep=lambda s: None)
    assert result == JobResult("job", 0, "complete", "", "done", "node-1", timed_out=False)


def test_a_job_that_never_ends_times_out() -> None:
    now = [0.0]

    class Tasks:
        def tasks(self, name: str) -> list[TaskState]:
            return []

    run = JobRun(Tasks(), "job")  # type: ignore[arg-type]
    run.logs = lambda: ""  # type: ignore[method-assign]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    result = run.wait(timeout_s=2, clock=lambda: now[0], sleep=sleep)
    assert result.timed_out and result.state == "pending" and result.exit_code is None


def test_ctx_platform_gives_a_target_or_a_swarm_platform(tmp_path: Path) -> None:
    ctx = StepContext(config=parse_config(CONFIG, tmp_path / "deploy.toml"))
    assert isinstance(ctx.platform("staging"), Target)
    swarm = ctx.platform("prod")
    assert isinstance(swarm, SwarmPlatform)
    assert ctx.platform("prod") is swarm
    assert (swarm.stack, swarm.service_name("app")) == ("dtswp9", "dtswp9_app")
    with pytest.raises(UsageError) as caught:
        ctx.target("prod")
    assert caught.value.message == (
        "environment prod runs on Swarm, and this command does not run there yet"
    )
    assert caught.value.untouched == "nothing was done"


def test_start_beside_is_refused_on_swarm(tmp_path: Path) -> None:
    config = parse_config(CONFIG, tmp_path / "deploy.toml")
    swarm = SwarmPlatform(config=config, environment=config.environment("prod"))
    with pytest.raises(UsageError):
        swarm.start_beside("app", count=2, what="starting the new release")


def test_a_session_on_swarm_gives_its_platform_and_refuses_the_compose_target(
    tmp_path: Path,
) -> None:
    ctx = StepContext(config=parse_config(CONFIG, tmp_path / "deploy.toml"))
    session = EnvSession(ctx=ctx, platform=ctx.platform("prod"), store=None, history=None)  # type: ignore[arg-type]
    assert isinstance(session.platform, SwarmPlatform)
    with pytest.raises(UsageError) as caught:
        _ = session.target
    assert caught.value.facts == {"environment": "prod", "platform": "swarm"}
    compose = EnvSession(ctx=ctx, platform=ctx.platform("staging"), store=None, history=None)  # type: ignore[arg-type]
    assert compose.target is compose.platform


def test_an_engine_that_is_no_swarm_manager_is_said_to_be_one(tmp_path: Path) -> None:
    config = parse_config(CONFIG, tmp_path / "deploy.toml")
    sdk = SimpleNamespace(info=lambda: {"Swarm": {"LocalNodeState": "inactive"}})
    platform = SwarmPlatform(
        config=config, environment=config.environment("prod"), connector=lambda host: Engine(sdk)
    )
    with pytest.raises(EnvironmentUnreachable) as caught:
        platform.tasks("app")
    assert caught.value.message == (
        "the engine at tcp://10.0.0.1:2375 (environment prod) is not a manager of an active "
        "Docker Swarm"
    )


def test_a_service_not_created_yet_has_no_tasks_and_the_engine_is_not_asked() -> None:
    """A first deploy to an empty stack asks for the tasks of services that do not exist yet:
    the engine would answer the task filter with "service not found"."""
    import docker.errors

    from deploytools.engine.swarm import Swarm

    asked: list[object] = []

    class Services:
        def get(self, name: str) -> object:
            raise docker.errors.NotFound(f"service {name} not found")

    class Api:
        def tasks(self, filters: object) -> list[object]:
            asked.append(filters)
            raise docker.errors.NotFound("service not found")

    engine = SimpleNamespace(_sdk=SimpleNamespace(services=Services(), api=Api()))
    swarm = Swarm(engine)  # type: ignore[arg-type]
    assert swarm.tasks("stack_db") == []
    assert asked == []


def test_deploy_to_swarm_takes_recreate_and_refuses_an_unknown_strategy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--strategy recreate on a Swarm environment goes to the Swarm deploy as asked (its
    recreate path, deploy_swarm_recreate); a strategy that does not exist is an error."""
    from deploytools.steps import deploy as deploy_step
    from deploytools.steps import deploy_swarm

    ctx = StepContext(config=parse_config(CONFIG, tmp_path / "deploy.toml"))
    called: list[str] = []
    done = SimpleNamespace(environment="prod", changed=True, message="m", record=None)

    def run(*a: Any, **k: Any) -> Any:
        called.append(k["strategy"])
        return done

    monkeypatch.setattr(deploy_swarm, "run", run)
    deploy_step.run(ctx, environment="prod", image="svc:2", strategy="recreate", approved_by="x")
    assert called == ["recreate"]
    with pytest.raises(UsageError) as caught:
        deploy_step.run(
            ctx, environment="prod", image="svc:2", strategy="blue-green", approved_by="x"
        )
    assert 'unknown deploy strategy "blue-green"' in caught.value.message
    assert called == ["recreate"]


@pytest.mark.parametrize("label", [None, False])
def test_a_release_not_declared_expand_only_is_refused_while_a_release_serves(
    label: bool | None,
) -> None:
    from deploytools.steps.deploy_swarm import refuse_unless_expand_only
    from deploytools.steps.migrate import ImageInfo

    info = ImageInfo(ref="svc:2", id="sha256:2", version="2", expand_only=label)
    swarm = SimpleNamespace(name="prod")
    with pytest.raises(UsageError) as caught:
        refuse_unless_expand_only(swarm, info, serving=True)  # type: ignore[arg-type]
    assert caught.value.untouched == "nothing was done: prod runs what it ran"
    assert ("declared NOT expand-only" if label is False else "not labelled") in (
        caught.value.message
    )
    # A first deploy has no old tasks to serve from the migrated schema.
    refuse_unless_expand_only(swarm, info, serving=False)  # type: ignore[arg-type]
    expand_only = ImageInfo(ref="svc:2", id="sha256:2", version="2", expand_only=True)
    refuse_unless_expand_only(swarm, expand_only, serving=True)  # type: ignore[arg-type]
