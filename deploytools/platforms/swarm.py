"""A Docker Swarm environment: a stack on a cluster, reached through a manager's engine.

`SwarmPlatform` implements `deploytools.platforms.Platform` for `platform = "swarm"`:

- the stack is rendered from the same Compose files (`docker-compose config`, then
  `swarm_stack.render`) and deployed with `docker stack deploy --compose-file -`;
- a service's containers are its tasks' containers, each reached on its node's engine (the
  environment's `node_host` template, filled with the node's hostname and address);
- `exec_in_service` runs in a running task's container, on the node that runs it (a backup's
  pg_dump runs where the database task runs);
- `run_once` is a `replicated-job` service of one task on the stack's network, never
  restarted: its exit code and logs are read, the service is removed, and so is its task's
  exited container on its node (Swarm's task reaper would leave it there for minutes).

Besides the protocol, the Swarm deploy strategy uses `stack`, `manager`, `service_name`,
`network`, `deploy_stack` and `tasks`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from deploytools.commands import stack as stack_cmd
from deploytools.config import Config, EnvironmentConfig, SwarmSettings, node_host_for
from deploytools.engine import process
from deploytools.engine.client import Container, Engine
from deploytools.engine.connection import connect
from deploytools.engine.errors import EngineError, NotFound
from deploytools.engine.exec import DEFAULT_TIMEOUT_S, ExecResult
from deploytools.engine.process import InputRunner, ProcessResult
from deploytools.engine.swarm import (
    JOB_LABEL,
    SERVICE_NAME_LABEL,
    STACK_LABEL,
    JobResult,
    JobSpec,
    NodeInfo,
    Swarm,
    TaskState,
)
from deploytools.errors import (
    ConfigError,
    DeadlineExceeded,
    DeployError,
    EnvironmentUnreachable,
    ExternalCommandFailed,
    UsageError,
)
from deploytools.platforms import swarm_stack
from deploytools.target import ServiceState, Target, run_checked, service_state

# For the static check at the end of the module only (mypy: SwarmPlatform implements Platform).
if TYPE_CHECKING:
    from deploytools.platforms import Platform

#: How long `docker stack deploy` and `docker-compose config` may take.
STACK_TIMEOUT_S = 300.0
#: How long pulling the release image onto the manager may take (a slow registry).
PULL_TIMEOUT_S = 600.0
#: How long scaling a service to 0 (a restore's swap) may take to stop its tasks, past their
#: stop grace period.
SCALE_TIMEOUT_S = 120.0
#: How long `run_once` may take to clear a removed job's containers from their nodes.
JOB_CLEANUP_TIMEOUT_S = 30.0


@dataclass
class SwarmPlatform:
    """One Swarm environment: the manager's engine, the stack's services, their tasks.

    `connector` makes an engine from an address (a node's, or the manager's): tests swap it.
    """

    config: Config
    environment: EnvironmentConfig
    runner: InputRunner = process.run
    connector: Callable[[str], Engine] = connect
    _manager: Engine | None = field(default=None, init=False, repr=False)
    _nodes: dict[str, Engine] = field(default_factory=dict, init=False, repr=False)
    _swarm: Swarm | None = field(default=None, init=False, repr=False)
    _unreachable: dict[str, EnvironmentUnreachable] = field(
        default_factory=dict, init=False, repr=False
    )

    @classmethod
    def for_environment(cls, config: Config, name: str) -> SwarmPlatform:
        return cls(config=config, environment=config.environment(name))

    # -- what it is --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.environment.name

    @property
    def stack(self) -> str:
        """The stack's name: the environment's compose_project."""
        return self.environment.compose_project

    @property
    def project(self) -> str:
        """The stack's name, under the name the Compose platform gives it (store helpers and
        messages are named after it)."""
        return self.stack

    @property
    def settings(self) -> SwarmSettings:
        return self.environment.swarm_settings

    @property
    def manager(self) -> Engine:
        """The manager's engine (`docker_host`), connected on first use."""
        if self._manager is None:
            self._manager = self.connector(self.environment.docker_host)
        return self._manager

    @property
    def engine(self) -> Engine:
        """The manager's engine: images checked there, the store's helper runs there."""
        return self.manager

    @property
    def swarm(self) -> Swarm:
        """The swarm, through the manager; EnvironmentUnreachable when `docker_host` is no
        manager of an active swarm (checked once)."""
        if self._swarm is None:
            swarm = Swarm(self.manager)
            try:
                manager = swarm.is_manager()
            except EngineError as error:
                manager, detail = False, f": {error.explanation}"
            else:
                detail = ""
            if not manager:
                shown = self.environment.docker_host or "the local engine"
                raise EnvironmentUnreachable(
                    f"the engine at {shown} (environment {self.name}) is not a manager of an "
                    f"active Docker Swarm{detail}",
                    untouched="nothing was done",
                    hint="point docker_host at a manager (`docker node ls` answers there), or "
                    'set platform = "compose"',
                    facts={"environment": self.name, "docker_host": shown},
                )
            self._swarm = swarm
        return self._swarm

    def service_name(self, service: str) -> str:
        """The Swarm service of the Compose service `service`: "<stack>_<service>"."""
        return f"{self.stack}_{service}"

    def network(self) -> str:
        """The stack's attachable overlay the app service is on ("<stack>_default", or as the
        Compose files name it): what a job and a proxy join."""
        app = self.swarm.service(self.service_name(self.config.project.app_service))
        if app is not None:
            attached = (app.attrs.get("Spec") or {}).get("TaskTemplate", {}).get("Networks") or []
            for entry in attached:
                name = self._network_name(str(entry.get("Target", "")))
                if name:
                    return name
        return f"{self.stack}_default"

    def _network_name(self, network_id: str) -> str:
        with contextlib.suppress(EngineError):
            return self.swarm.network_name(network_id)
        return ""

    def ensure_image(self, ref: str, *, progress: Callable[[str], None] | None = None) -> None:
        """The release image `ref` on the manager, whose engine deploytools reads its labels
        from (version, expand-only): pulled from its registry when `ref` is pinned by digest
        (`repository[:tag]@sha256:...`, which no later push can move) and the manager lacks
        it. The nodes pull it themselves when a task of it starts there. Any other reference
        is left as it is (the image must be on the manager already, as on one engine)."""
        if "@sha256:" not in ref or self.manager.find_image(ref) is not None:
            return
        name = ref.split("@", 1)[0]
        registry = name.split("/", 1)[0] if "/" in name else "docker.io"
        if progress is not None:
            progress(f"[{self.name}] pulling {ref} from {registry} on the manager")
        left = f"nothing was done: {self.name} runs what it ran"
        hint = (
            f"push the image to {registry} (`deploytools image build --push`) and check that "
            "the manager reaches the registry and is logged in to it"
        )
        deadline = time.monotonic() + PULL_TIMEOUT_S
        try:
            for chunk in self.manager.pull(ref, read_timeout_s=PULL_TIMEOUT_S):
                if "error" in chunk:
                    raise EnvironmentUnreachable(
                        f"the manager of environment {self.name} cannot pull {ref}: "
                        f"{str(chunk['error']).strip()}",
                        untouched=left,
                        hint=hint,
                        facts={"environment": self.name, "image": ref, "registry": registry},
                    )
                if time.monotonic() > deadline:
                    raise DeadlineExceeded(
                        f"pulling {ref} on the manager of environment {self.name} took more "
                        f"than {PULL_TIMEOUT_S:.0f} s",
                        untouched=left,
                        hint=hint,
                    )
        except EngineError as error:
            raise EnvironmentUnreachable(
                f"the manager of environment {self.name} cannot pull {ref}: "
                f"{error.explanation or error}",
                untouched=left,
                hint=hint,
                facts={"environment": self.name, "image": ref, "registry": registry},
            ) from None

    # -- the stack ----------------------------------------------------------------------------

    @property
    def compose_target(self) -> Target:
        """The Compose side of the environment (its files, its variables, `docker-compose`):
        what the stack is rendered from."""
        return Target(config=self.config, environment=self.environment, runner=self.runner)

    def compose_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """What `docker-compose config` and `docker stack deploy` run with (as Target's)."""
        return self.compose_target.compose_env(extra)

    def _docker(self, argv: list[str], *, env: Mapping[str, str], what: str, input: str) -> None:
        """The docker CLI against the manager (DOCKER_HOST in `env`), `input` on its stdin."""
        child_env = self.compose_env(env)
        run_checked(
            lambda: self.runner(
                argv, env=child_env, timeout=STACK_TIMEOUT_S, cwd=str(self.config.root), input=input
            ),
            argv=argv,
            env=child_env,
            environment=self.environment,
            timeout=STACK_TIMEOUT_S,
            what=what,
            install_hint="install the docker CLI (Debian: docker.io)",
        )

    def compose_model(self, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The normalized Compose model (`docker-compose config`, variables substituted)."""
        done = self.compose_target.compose(
            stack_cmd.compose_config,
            env=env,
            timeout=STACK_TIMEOUT_S,
            what="rendering the Compose files",
        )
        model = yaml.safe_load(done.stdout)
        if not isinstance(model, dict):
            raise ExternalCommandFailed(
                f"`docker-compose config` printed no Compose model for environment {self.name}",
                untouched="nothing was deployed",
                facts={"argv": list(done.argv)},
            )
        return model

    def render_stack(self, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The stack file (a dict) for the Compose files with `env` set."""
        return swarm_stack.render(
            self.compose_model(env),
            stack=self.stack,
            app_service=self.config.project.app_service,
            settings=self.settings,
        )

    def deploy_stack(
        self,
        env: Mapping[str, str],
        *,
        what: str,
        services: Sequence[str] | None = None,
    ) -> None:
        """Render the stack file with `env` and `docker stack deploy` it on the manager.

        :param services: deploy only these services' new specs: every other service that
            exists keeps the image it runs (Swarm then leaves it as it is), and one that does
            not exist yet is not created.
        """
        stack_file = self.render_stack(env)
        if services is not None:
            for name in [n for n in stack_file["services"] if n not in services]:
                current = self.swarm.service(self.service_name(name))
                if current is None:
                    del stack_file["services"][name]
                else:
                    stack_file["services"][name]["image"] = current.image
        text = yaml.safe_dump(stack_file, sort_keys=False)
        self._docker(stack_cmd.deploy(self.stack), env=env, what=what, input=text)

    def remove_stack(self, *, what: str = "removing the stack") -> None:
        """`docker stack rm`: services and networks; the volumes stay on their nodes."""
        self._docker(stack_cmd.remove(self.stack), env={}, what=what, input="")

    # -- tasks and their containers -----------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        return self.swarm.nodes()

    def tasks(self, service: str, *, desired_state: str | None = None) -> list[TaskState]:
        """The tasks of the Compose service `service` (history included unless
        `desired_state`, "running" for the current ones), addresses on the stack network."""
        return self.swarm.tasks(
            self.service_name(service), network=self.network(), desired_state=desired_state
        )

    def node_engine(self, task: TaskState) -> Engine:
        """The engine of the node that runs `task` (connected once per node; a node that did
        not answer is not tried again by this platform: EnvironmentUnreachable)."""
        if task.node_id in self._unreachable:
            raise self._unreachable[task.node_id]
        if task.node_id not in self._nodes:
            nodes = {n.id: n for n in self.swarm.nodes()}
            node = nodes.get(task.node_id)
            if node is None:
                raise EnvironmentUnreachable(
                    f"task {task.id[:12]} of {task.service} runs on node {task.node_id[:12]}, "
                    "which the swarm no longer lists",
                    untouched="nothing was done",
                    facts={"environment": self.name, "task": task.id},
                )
            address = node_host_for(self.settings.node_host, hostname=node.hostname, addr=node.addr)
            try:
                self._nodes[task.node_id] = self.connector(address)
            except EnvironmentUnreachable as error:
                self._unreachable[task.node_id] = error
                raise
        return self._nodes[task.node_id]

    def task_container(self, task: TaskState) -> Container | None:
        """The task's container on its node, or None (not created yet, removed, or its node
        does not answer: a node that is down still lists its tasks for a while)."""
        if not task.container_id:
            return None
        try:
            return self.node_engine(task).container(task.container_id)
        except (NotFound, EnvironmentUnreachable):
            return None

    def _services(self, service: str | None) -> list[str]:
        if service is not None:
            return [service]
        prefix = f"{self.stack}_"
        return [
            s.name.removeprefix(prefix)
            for s in self.swarm.stack_services(self.stack)
            if JOB_LABEL not in s.labels  # a migration's job is not one of the stack's services
        ]

    def containers(
        self, service: str | None = None, *, include_stopped: bool = True
    ) -> list[Container]:
        """The stack's tasks' containers (of `service`, or all), each on its node's engine;
        the current tasks' only unless `include_stopped`."""
        found: list[Container] = []
        for name in self._services(service):
            wanted = None if include_stopped else "running"
            for task in self.tasks(name, desired_state=wanted):
                container = self.task_container(task)
                if container is not None and (include_stopped or container.status == "running"):
                    found.append(container)
        return found

    def running(self, service: str) -> list[Container]:
        """The containers of `service`'s running tasks."""
        return [
            c
            for t in self.tasks(service, desired_state="running")
            if t.running and (c := self.task_container(t)) is not None and c.status == "running"
        ]

    def exec_in_service(
        self,
        service: str,
        argv: Sequence[str],
        *,
        stdin: Iterable[bytes] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> ExecResult:
        """Run argv in a running task's container of `service`, on its node."""
        running = self.running(service)
        if not running:
            raise EnvironmentUnreachable(
                f'the service "{service}" of environment {self.name} has no running task',
                untouched="nothing was done",
                hint=f"look at `deploytools status --env {self.name}`",
                facts={"environment": self.name, "service": service},
            )
        return running[0].exec(argv, stdin=stdin, timeout_s=timeout_s)

    # -- the platform's verbs -----------------------------------------------------------------

    def defines(self, service: str) -> bool:
        return self.compose_target.defines(service)

    def start(
        self, services: Sequence[str], *, env: Mapping[str, str] | None = None, what: str
    ) -> None:
        """`docker stack deploy` with `services`' new specs; every other service that runs
        keeps its image (a new service is created as the files say)."""
        self.deploy_stack(env or {}, what=what, services=services)

    def start_beside(
        self, service: str, *, count: int, env: Mapping[str, str] | None = None, what: str
    ) -> list[Container]:
        """Not a Swarm verb: a Swarm service runs one image; its update starts the new tasks
        beside the old ones (`order: start-first`), driven by the Swarm deploy strategy."""
        raise UsageError(
            f"{what}: on Swarm environment {self.name} new tasks start through the service's "
            "rolling update, not beside it",
            untouched="nothing was done",
            hint="deploy with the Swarm strategy (`deploytools deploy`)",
        )

    def stop(self, services: Sequence[str], *, what: str) -> None:
        """Scale `services` to 0 replicas and wait until none of their tasks runs."""
        for service in services:
            self._scale(service, 0, what=what)

    def _scale(self, service: str, replicas: int, *, what: str) -> None:
        name = self.service_name(service)
        try:
            self.swarm.scale(name, replicas)
        except NotFound:
            raise EnvironmentUnreachable(
                f'{what}: environment {self.name} has no service "{name}"',
                untouched="nothing was done",
                hint=f"look at `deploytools status --env {self.name}`",
            ) from None
        if replicas == 0:
            timeout = SCALE_TIMEOUT_S + self.settings.stop_grace_period_s
            deadline = time.monotonic() + timeout
            while any(t.running for t in self.tasks(service)):
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded(
                        f"{what}: tasks of {name} still run {timeout:.0f} s after scaling to 0",
                        hint=f"look at `docker service ps {name}`",
                    )
                time.sleep(0.3)

    @contextlib.contextmanager
    def paused(self, service: str, *, what: str) -> Iterator[None]:
        """`service` has no running task for the block (scaled to 0), then its replicas
        again, of the same spec."""
        current = self.swarm.service(self.service_name(service))
        replicas = current.replicas if current is not None and current.replicas else 0
        if not replicas:
            yield
            return
        self._scale(service, 0, what=what)
        try:
            yield
        finally:
            self._scale(service, replicas, what=what)

    def run_once(
        self,
        service: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        container_env: Mapping[str, str] | None = None,
        timeout_s: float,
        what: str,
    ) -> ProcessResult:
        """`command` once, in a replicated-job service of `service`'s spec (rendered with
        `env`: the new image) on the stack's network, never restarted; its exit code and logs,
        then it is removed: the service, and its task's container on its node (within
        JOB_CLEANUP_TIMEOUT_S; what a node that does not answer keeps is named in the
        result's stderr, or the error's facts, and left to Swarm). Raises
        ExternalCommandFailed when it fails, DeadlineExceeded when it does not end within
        `timeout_s` (it is removed all the same)."""
        spec = self.render_stack(env)["services"].get(service)
        if spec is None:
            raise ConfigError(
                f'the Compose files define no service "{service}"',
                untouched="nothing was done",
            )
        # The stack file keeps Compose's `$$` (a literal `$`) for `docker stack deploy` to
        # read; the job is made through the API, which takes the values as they are meant.
        environment = {str(k): _literal(v) for k, v in _env(spec).items()}
        environment.update(container_env or {})
        entrypoint = _words(spec.get("entrypoint"))
        job = JobSpec(
            name=f"{self.stack}_{service}-job-{secrets.token_hex(3)}"[:63],
            image=str(spec["image"]),
            args=list(command),
            entrypoint=None if entrypoint is None else [_literal(w) for w in entrypoint],
            env=environment,
            network=self.network(),
            labels={STACK_LABEL: self.stack},
            workdir=_literal(spec.get("working_dir")),
            user=_literal(spec.get("user")),
        )
        argv = ("docker", "service", "create", "--mode", "replicated-job", job.image, *command)
        run = self.swarm.run_job(job)
        try:
            result = run.wait(timeout_s=timeout_s)
        finally:
            tasks: list[TaskState] = []
            with contextlib.suppress(EngineError):
                tasks = run.tasks()
            with contextlib.suppress(EngineError):
                run.remove()
            left = self._clear_job(job.name, tasks, timeout_s=JOB_CLEANUP_TIMEOUT_S)
        return _job_outcome(result, argv=argv, what=what, environment=self.name, left=left)

    def _clear_job(self, job: str, tasks: Sequence[TaskState], *, timeout_s: float) -> list[str]:
        """Force-remove the removed job's task containers on the nodes its tasks went to,
        and wait (until `timeout_s`) until none is listed there. What is left, in words."""
        engines: dict[str, Engine] = {}
        left: list[str] = []
        for task in tasks:
            node = task.node or task.node_id
            if not task.node_id or node in engines:
                continue
            try:
                engines[node] = self.node_engine(task)
            except EnvironmentUnreachable as error:
                left.append(f"on node {task.node or task.node_id}: {error.message}")
        return left + clear_containers(engines, job, timeout_s=timeout_s)

    # -- what runs ----------------------------------------------------------------------------

    def services(self) -> list[ServiceState]:
        """What runs in this environment: one entry per current task (its node, state and
        health), sorted by service and node."""
        states: list[ServiceState] = []
        for name in self._services(None):
            for task in self.tasks(name, desired_state="running"):
                states.append(self._task_state(name, task))
        return sorted(states, key=lambda s: (s.service, s.node, s.container))

    def _task_state(self, service: str, task: TaskState) -> ServiceState:
        container = None
        with contextlib.suppress(DeployError, EngineError):
            container = self.task_container(task)
        if container is not None:
            return dataclasses.replace(service_state(container), service=service, node=task.node)
        # The node is not reachable (or the task has no container yet): Swarm's view.
        return ServiceState(
            service=service,
            container=f"{self.service_name(service)}.{task.slot or task.node_id}",
            image=task.image,
            image_id="",
            version=None,
            revision=None,
            state=task.state,
            health=None,
            started_at=task.updated_at,
            node=task.node,
        )

    def store_image(self) -> str | None:
        """The database service's image, when the manager has it: the store's helper runs it
        (pg_restore for a backup's verification); None otherwise."""
        current = self.swarm.service(self.service_name(self.config.project.database_service))
        if current is None:
            return None
        ref = current.image
        if self.manager.find_image(ref) is not None:
            return ref
        bare = ref.split("@", 1)[0]
        return bare if self.manager.find_image(bare) is not None else None


def _env(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A stack service's environment as a mapping (the list form `NAME=value` too)."""
    env = spec.get("environment") or {}
    if isinstance(env, Mapping):
        return dict(env)
    return dict(str(item).partition("=")[::2] for item in env)


def _literal(value: Any) -> str:
    """A value of the stack file as the container gets it: Compose's `$$` is one `$`."""
    return "" if value is None else str(value).replace("$$", "$")


def _words(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def clear_containers(
    engines: Mapping[str, Engine],
    service: str,
    *,
    timeout_s: float,
    poll_s: float = 0.3,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Force-remove the containers of the (removed) Swarm service `service` on each node's
    engine (`engines`: by node name) until none is listed, or `timeout_s` passes. What is
    left, in words (empty when every node is clear). A node's agent may be removing one
    already: the engine then refuses ours, and the next look finds it gone."""
    deadline = clock() + timeout_s
    pending = dict(engines)
    problems: dict[str, str] = {}
    while pending:
        for node, engine in list(pending.items()):
            try:
                found = engine.containers(labels=[f"{SERVICE_NAME_LABEL}={service}"], all=True)
            except EngineError as error:
                problems[node] = error.explanation
                continue
            problems.pop(node, None)
            for container in found:
                try:
                    container.remove(force=True)
                except NotFound:
                    pass
                except EngineError as error:
                    problems[node] = f"{container.name}: {error.explanation}"
            if node not in problems:  # each one listed is gone
                del pending[node]
        if not pending:
            break
        if clock() >= deadline:
            return [
                f"on node {node}: still there {timeout_s:.0f} s after the job was removed"
                + (f" ({problems[node]})" if node in problems else "")
                for node in pending
            ]
        sleep(min(poll_s, max(0.0, deadline - clock())))
    return []


def _job_outcome(
    result: JobResult,
    *,
    argv: tuple[str, ...],
    what: str,
    environment: str,
    left: Sequence[str] = (),
) -> ProcessResult:
    """The job's end as a ProcessResult (its logs as stdout; `left`, what of the job stays on
    the nodes, as stderr), or the error it deserves."""
    leftovers = "".join(f"the job's container was not removed {where}\n" for where in left)
    facts: dict[str, Any] = {
        "argv": list(argv),
        "stdout": result.logs[-4000:],
        "stderr": leftovers,
        "node": result.node,
    }
    if result.timed_out:
        raise DeadlineExceeded(
            f"{what} did not finish within its deadline on environment {environment} "
            f"(its task: {result.state}); the job was removed",
            hint="look at the job's output above; raise deploy.migration_timeout_s if it is slow",
            facts=facts,
        )
    if result.exit_code != 0:
        detail = result.error or (result.logs.strip().splitlines() or ["no output"])[-1]
        code = "no exit code" if result.exit_code is None else f"exit {result.exit_code}"
        raise ExternalCommandFailed(
            f"{what} failed on environment {environment} ({code}, task {result.state}): {detail}",
            facts={**facts, "exit_code": result.exit_code},
        )
    return ProcessResult(argv, 0, result.logs, leftovers)


if TYPE_CHECKING:

    def _a_swarm_platform_is_a_platform(platform: SwarmPlatform) -> Platform:
        """mypy checks here that SwarmPlatform implements the Platform protocol."""
        return platform


__all__ = ["SwarmPlatform"]
