"""A Docker Swarm, typed: its nodes, services and tasks, and one-off jobs, through a manager.

`Swarm` wraps a manager's `Engine` (the docker SDK ships no types): `nodes`, `service`,
`tasks` return frozen dataclasses; `run_job` starts a `replicated-job` service (one task,
never restarted) and `JobRun` waits for it with a deadline, reads its exit code and logs and
removes its service. A task's container lives on its node's engine: the caller connects to
that node (`connection.connect`) and asks it for the container by `TaskState.container_id`
(or by SERVICE_NAME_LABEL: what is left of a removed job is cleared there).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploytools.engine.client import Engine
from deploytools.engine.errors import EngineError, NotFound, translated

#: The label `docker stack deploy` puts on a stack's services, networks and tasks.
STACK_LABEL = "com.docker.stack.namespace"
#: The label of a job service deploytools starts (what it runs, for `docker service ls`).
JOB_LABEL = "deploytools.job"
#: The label Swarm puts on a task's container: the service it belongs to.
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
#: Task states after which a task never runs again.
FINAL_STATES = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})


@dataclass(frozen=True)
class NodeInfo:
    """One node of the swarm, as a manager sees it."""

    id: str
    hostname: str
    addr: str
    role: str  # "manager" or "worker"
    availability: str  # "active", "pause", "drain"
    state: str  # "ready", "down", ...
    leader: bool = False


@dataclass(frozen=True)
class TaskState:
    """One task of a service (a slot's container, now or in its history)."""

    id: str
    service: str
    slot: int | None
    node_id: str
    #: The node's hostname ("" before the task is scheduled).
    node: str
    state: str
    desired_state: str
    image: str
    #: The task's container on its node ("" before it is created).
    container_id: str
    #: The task's address on the network asked for ("" when not on it).
    address: str
    #: Why the task failed or was rejected (Swarm's words), "" when it did not.
    error: str
    message: str
    exit_code: int | None
    created_at: str
    updated_at: str

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class ServiceInfo:
    """A service's spec, as far as deploytools reads it."""

    id: str
    name: str
    image: str
    mode: str  # "replicated", "global", "replicated-job", "global-job"
    replicas: int | None
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The spec's version: `docker service update` must name it.
    version: int = 0
    attrs: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class JobSpec:
    """A one-off job: one task of `image` on `network`, never restarted, its output kept."""

    name: str
    image: str
    #: Replaces the image's CMD (as `docker run IMAGE ARGS`); the ENTRYPOINT stays unless
    #: `entrypoint` is given.
    args: Sequence[str]
    entrypoint: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    network: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""


@dataclass(frozen=True)
class JobResult:
    """A job that ended (or did not, in time): its task's exit code and its output."""

    name: str
    exit_code: int | None
    state: str
    error: str
    logs: str
    node: str
    timed_out: bool = False


def _node(sdk: Mapping[str, Any]) -> NodeInfo:
    description = sdk.get("Description") or {}
    status = sdk.get("Status") or {}
    spec = sdk.get("Spec") or {}
    manager = sdk.get("ManagerStatus") or {}
    addr = str(status.get("Addr") or "")
    if addr in ("", "0.0.0.0") and manager.get("Addr"):  # noqa: S104 - read, not bound
        # A manager may report 0.0.0.0 as its node address; its manager address is real.
        addr = str(manager["Addr"]).rsplit(":", 1)[0]
    return NodeInfo(
        id=str(sdk.get("ID", "")),
        hostname=str(description.get("Hostname", "")),
        addr=addr,
        role=str(spec.get("Role", "")),
        availability=str(spec.get("Availability", "")),
        state=str(status.get("State", "")),
        leader=bool(manager.get("Leader", False)),
    )


def task_state(
    sdk: Mapping[str, Any],
    *,
    service: str,
    nodes: Mapping[str, NodeInfo],
    network: str = "",
) -> TaskState:
    """A task as the engine returns it (`GET /tasks`), typed; `network` picks its address."""
    status = sdk.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    spec = ((sdk.get("Spec") or {}).get("ContainerSpec")) or {}
    node_id = str(sdk.get("NodeID") or "")
    address = ""
    for attachment in sdk.get("NetworksAttachments") or []:
        name = ((attachment.get("Network") or {}).get("Spec") or {}).get("Name", "")
        if network and name == network:
            addresses = attachment.get("Addresses") or []
            address = str(addresses[0]).split("/", 1)[0] if addresses else ""
    code = container.get("ExitCode")
    slot = sdk.get("Slot")
    return TaskState(
        id=str(sdk.get("ID", "")),
        service=service,
        slot=int(slot) if slot is not None else None,
        node_id=node_id,
        node=nodes[node_id].hostname if node_id in nodes else "",
        state=str(status.get("State", "")),
        desired_state=str(sdk.get("DesiredState", "")),
        image=str(spec.get("Image", "")),
        container_id=str(container.get("ContainerID") or ""),
        address=address,
        error=str(status.get("Err") or ""),
        message=str(status.get("Message") or ""),
        exit_code=int(code) if code is not None and status.get("State") in FINAL_STATES else None,
        created_at=str(sdk.get("CreatedAt", "")),
        updated_at=str(sdk.get("UpdatedAt", "")),
    )


def _service(sdk: Any) -> ServiceInfo:
    attrs: Mapping[str, Any] = sdk.attrs
    spec = attrs.get("Spec") or {}
    mode_spec = spec.get("Mode") or {}
    mode = {
        "Replicated": "replicated",
        "Global": "global",
        "ReplicatedJob": "replicated-job",
        "GlobalJob": "global-job",
    }.get(next(iter(mode_spec), ""), "")
    replicas = (mode_spec.get("Replicated") or {}).get("Replicas")
    image = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", "")
    return ServiceInfo(
        id=str(attrs.get("ID", "")),
        name=str(spec.get("Name", "")),
        image=str(image),
        mode=mode,
        replicas=int(replicas) if replicas is not None else None,
        labels=dict(spec.get("Labels") or {}),
        version=int((attrs.get("Version") or {}).get("Index", 0)),
        attrs=attrs,
    )


class Swarm:
    """The swarm a manager's engine belongs to."""

    def __init__(self, manager: Engine) -> None:
        self.manager = manager
        # The engine package's own client: this module is part of the engine boundary.
        self._sdk = manager._sdk

    # -- nodes ---------------------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        """Every node, as the manager sees it; EngineAPIError when the engine is no manager."""
        with translated():
            found = self._sdk.api.nodes()
        return sorted((_node(n) for n in found), key=lambda n: n.hostname)

    def is_manager(self) -> bool:
        """Whether the engine is a manager of an active swarm."""
        with translated():
            info = self._sdk.info()
        swarm = info.get("Swarm") or {}
        return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))

    # -- services ------------------------------------------------------------------------

    def service(self, name: str) -> ServiceInfo | None:
        """The service called `name`, or None when there is none."""
        try:
            with translated():
                return _service(self._sdk.services.get(name))
        except NotFound:
            return None

    def services(self, *, labels: Sequence[str] = ()) -> list[ServiceInfo]:
        """The services carrying every one of `labels` ("key=value")."""
        with translated():
            found = self._sdk.services.list(filters={"label": list(labels)})
        return sorted((_service(s) for s in found), key=lambda s: s.name)

    def stack_services(self, stack: str) -> list[ServiceInfo]:
        return self.services(labels=[f"{STACK_LABEL}={stack}"])

    def scale(self, name: str, replicas: int) -> None:
        """Set a replicated service's replicas (NotFound when there is no such service)."""
        with translated():
            self._sdk.services.get(name).scale(replicas)

    def network_name(self, network_id: str) -> str:
        """A network's name from its ID (NotFound when there is none)."""
        with translated():
            return str(self._sdk.networks.get(network_id).name)

    def remove_service(self, name: str) -> None:
        """Remove the service (its tasks' containers go with it); gone already is fine."""
        with contextlib.suppress(NotFound), translated():
            self._sdk.api.remove_service(name)

    # -- tasks ---------------------------------------------------------------------------

    def tasks(
        self, service: str, *, network: str = "", desired_state: str | None = None
    ) -> list[TaskState]:
        """The service's tasks (history included unless `desired_state` says, "running"
        for the current ones), sorted by slot then age; addresses on `network`."""
        # A service not created yet (a first deploy to an empty stack) has no tasks; the
        # engine would answer the filter with "service not found".
        wanted = self._service_id(service)
        if not wanted:
            return []
        filters: dict[str, Any] = {"service": service}
        if desired_state:
            filters["desired-state"] = desired_state
        with translated():
            found = self._sdk.api.tasks(filters=filters)
        nodes = {n.id: n for n in self.nodes()}
        states = [task_state(t, service=service, nodes=nodes, network=network) for t in found]
        # A service filter matches by name prefix too ("app" finds "app2"'s tasks).
        states = [s for s, raw in zip(states, found, strict=True) if raw.get("ServiceID") == wanted]
        return sorted(states, key=lambda t: (t.slot or 0, t.created_at))

    def _service_id(self, name: str) -> str:
        found = self.service(name)
        return found.id if found else ""

    # -- jobs ----------------------------------------------------------------------------

    def run_job(self, spec: JobSpec) -> JobRun:
        """Start `spec` as a replicated-job service of one task, never restarted (a failed
        migration must not run twice); wait for it with the JobRun."""
        import docker.types  # the SDK loads with the engine, never with deploytools

        options: dict[str, Any] = {
            "name": spec.name,
            "args": list(spec.args),
            "env": [f"{k}={v}" for k, v in spec.env.items()],
            "labels": {JOB_LABEL: spec.name, **spec.labels},
            "container_labels": dict(spec.labels),
            "mode": docker.types.ServiceMode("replicated-job", replicas=1, concurrency=1),
            "restart_policy": docker.types.RestartPolicy(condition="none"),
        }
        if spec.entrypoint is not None:
            options["command"] = list(spec.entrypoint)
        if spec.network:
            options["networks"] = [spec.network]
        if spec.workdir:
            options["workdir"] = spec.workdir
        if spec.user:
            options["user"] = spec.user
        with translated():
            self._sdk.services.create(spec.image, **options)
        return JobRun(self, spec.name)


class JobRun:
    """A job started by `Swarm.run_job`: `wait` for its end, then `remove` it."""

    def __init__(self, swarm: Swarm, name: str) -> None:
        self.swarm = swarm
        self.name = name

    def task(self) -> TaskState | None:
        tasks = self.tasks()
        return tasks[-1] if tasks else None

    def tasks(self) -> list[TaskState]:
        """Every task of the job (one, unless Swarm replaced a task lost with its node)."""
        return self.swarm.tasks(self.name)

    def wait(
        self,
        *,
        timeout_s: float,
        poll_s: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> JobResult:
        """Wait until the job's task ends (complete, failed, rejected), or `timeout_s`
        passes (`timed_out`; the job is left as it is: the caller removes it)."""
        deadline = clock() + timeout_s
        while True:
            task = self.task()
            if task is not None and task.final:
                return self._result(task, timed_out=False)
            if clock() >= deadline:
                return self._result(task, timed_out=True)
            sleep(min(poll_s, max(0.0, deadline - clock())))

    def _result(self, task: TaskState | None, *, timed_out: bool) -> JobResult:
        return JobResult(
            name=self.name,
            exit_code=task.exit_code if task else None,
            state=task.state if task else "pending",
            error=task.error if task else "",
            logs=self.logs(),
            node=task.node if task else "",
            timed_out=timed_out,
        )

    def logs(self) -> str:
        """What the job's task printed (stdout and stderr together), as the manager gathers
        it from the task's node; "" when the engine has none (yet)."""
        try:
            with translated():
                raw = self.swarm._sdk.api.service_logs(
                    self.name, stdout=True, stderr=True, follow=False
                )
                data = raw if isinstance(raw, bytes) else b"".join(raw)
        except EngineError:
            return ""
        return data.decode("utf-8", "replace")

    def remove(self) -> None:
        self.swarm.remove_service(self.name)


__all__ = [
    "FINAL_STATES",
    "JOB_LABEL",
    "SERVICE_NAME_LABEL",
    "STACK_LABEL",
    "JobResult",
    "JobRun",
    "JobSpec",
    "NodeInfo",
    "ServiceInfo",
    "Swarm",
    "TaskState",
    "task_state",
]
