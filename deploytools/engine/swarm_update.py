"""Swarm's rolling update of one service, started and watched by deploytools.

`ServiceUpdate.start` changes the service's image (and its update policy: start-first,
parallelism, delay, monitor, failure action "pause") in one write of the whole spec, as
`docker service update --image` does, without resolving the image against a registry: the
nodes have it already (a digest pinned by the caller is kept as it is). Swarm then replaces the
tasks batch by batch; `watch` follows its UpdateStatus and the tasks with a deadline and hands
each new task that reached `running` (healthy, when the image has a healthcheck) to the
caller's check, once; a check that raises ends the watch, and `roll_back` asks Swarm for the
rollback of the update in progress (`docker service update --rollback`: the previous spec,
server-side), which `wait_rolled_back` follows.

The SDK is reached through `ServiceApi` (four calls of the engine's API), so tests fake it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from deploytools.engine.client import Engine
from deploytools.engine.errors import translated
from deploytools.engine.swarm import NodeInfo, TaskState, _node, task_state

#: UpdateStatus.State values (the engine's words).
UPDATING = "updating"
PAUSED = "paused"
COMPLETED = "completed"
ROLLBACK_STARTED = "rollback_started"
ROLLBACK_PAUSED = "rollback_paused"
ROLLBACK_COMPLETED = "rollback_completed"
#: States in which Swarm stopped moving tasks: the update is over, for better or worse.
SETTLED = frozenset({PAUSED, COMPLETED, ROLLBACK_PAUSED, ROLLBACK_COMPLETED})
#: Task states in which a task holds nothing on its node any more.
GONE = frozenset({"shutdown", "complete", "failed", "rejected", "orphaned"})
#: Desired states of a task Swarm means to run.
MEANT_TO_RUN = frozenset({"running", "ready", "accepted"})


class ServiceApi(Protocol):
    """The engine calls an update needs (the docker SDK's low-level API, or a fake)."""

    def inspect_service(self, name: str) -> Mapping[str, Any]: ...

    def post_spec(
        self, service_id: str, version: int, spec: Mapping[str, Any], *, rollback: bool
    ) -> None: ...

    def tasks(self, service_id: str) -> Sequence[Mapping[str, Any]]: ...

    def nodes(self) -> Sequence[Mapping[str, Any]]: ...


class SdkServiceApi:
    """`ServiceApi` on a manager's engine."""

    def __init__(self, manager: Engine) -> None:
        # The engine package's own client: this module is part of the engine boundary.
        self._api = manager._sdk.api

    def inspect_service(self, name: str) -> Mapping[str, Any]:
        with translated():
            return dict(self._api.inspect_service(name))

    def post_spec(
        self, service_id: str, version: int, spec: Mapping[str, Any], *, rollback: bool
    ) -> None:
        # The SDK's update_service has no `rollback`; the endpoint does (API 1.28+). With it,
        # the engine ignores the body and goes back to the PreviousSpec it keeps.
        params: dict[str, Any] = {"version": version}
        if rollback:
            params["rollback"] = "previous"
        url = self._api._url("/services/{0}/update", service_id)
        with translated():
            self._api._raise_for_status(self._api._post_json(url, data=spec, params=params))

    def tasks(self, service_id: str) -> Sequence[Mapping[str, Any]]:
        with translated():
            return list(self._api.tasks(filters={"service": service_id}))

    def nodes(self) -> Sequence[Mapping[str, Any]]:
        with translated():
            return list(self._api.nodes())


@dataclass(frozen=True)
class UpdatePolicy:
    """How Swarm replaces the tasks (the spec's UpdateConfig)."""

    parallelism: int = 1
    delay_s: float = 0.0
    #: How long Swarm watches a batch's new tasks for failures before it counts them good.
    monitor_s: float = 5.0
    order: str = "start-first"
    #: "pause" leaves the decision (rollback or not) to deploytools; Swarm's own "rollback"
    #: would roll back behind its back.
    failure_action: str = "pause"
    max_failure_ratio: float = 0.0

    def update_config(self) -> dict[str, Any]:
        return {
            "Parallelism": self.parallelism,
            "Delay": _ns(self.delay_s),
            "FailureAction": self.failure_action,
            "Monitor": _ns(self.monitor_s),
            "MaxFailureRatio": self.max_failure_ratio,
            "Order": self.order,
        }


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


def image_of(spec: Mapping[str, Any]) -> str:
    return str(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", ""))


def updated_spec(
    spec: Mapping[str, Any], image: str, policy: UpdatePolicy, *, replicas: int | None = None
) -> dict[str, Any]:
    """`spec` (a service's Spec) with `image` and `policy`'s UpdateConfig (and `replicas`, when
    given); the rollback of this update uses the same order and parallelism (RollbackConfig)."""
    new = copy.deepcopy(dict(spec))
    template = new.setdefault("TaskTemplate", {})
    template.setdefault("ContainerSpec", {})["Image"] = image
    if replicas is not None:
        new.setdefault("Mode", {})["Replicated"] = {"Replicas": replicas}
    new["UpdateConfig"] = policy.update_config()
    rollback = policy.update_config()
    rollback["FailureAction"] = "pause"  # a rollback that fails stops; it never loops
    new["RollbackConfig"] = rollback
    return new


@dataclass(frozen=True)
class UpdateProgress:
    """One look at the service during an update."""

    #: UpdateStatus.State ("" when the service was never updated).
    state: str
    message: str
    #: The image the spec names now, and the one before it (PreviousSpec).
    image: str
    previous_image: str
    #: The tasks meant to run (desired state running, or ready/accepted on their way).
    tasks: tuple[TaskState, ...] = field(default_factory=tuple)
    #: Tasks of this update that failed or were rejected (their errors are Swarm's words).
    failed: tuple[TaskState, ...] = field(default_factory=tuple)
    #: Tasks of the spec's image on a node that is down: Swarm neither finishes nor pauses
    #: an update while one of them is left there (seen: "update in progress" for minutes).
    stranded: tuple[TaskState, ...] = field(default_factory=tuple)

    def running(self, image: str) -> list[TaskState]:
        return [t for t in self.tasks if t.running and t.image == image]

    def describe(self) -> str:
        counts: dict[str, int] = {}
        for task in self.tasks:
            key = f"{task.state} {task.image.rsplit('/', 1)[-1]}"
            counts[key] = counts.get(key, 0) + 1
        tasks = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no task"
        return f"{self.state or 'no update'}: {tasks}" + (
            f" ({self.message})" if self.message else ""
        )


class UpdateFailed(Exception):
    """The watch ended without the update completing: the reason, and the last look."""

    def __init__(self, message: str, progress: UpdateProgress, *, timed_out: bool = False):
        super().__init__(message)
        self.message = message
        self.progress = progress
        self.timed_out = timed_out


#: The caller's check of a new task once it runs; raising ends the watch (the exception goes
#: through as it is).
TaskCheck = Callable[[TaskState], None]


class ServiceUpdate:
    """The rolling update of the service `service` (its full Swarm name)."""

    def __init__(
        self,
        api: ServiceApi,
        service: str,
        *,
        network: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = 0.5,
    ) -> None:
        self.api, self.service, self.network = api, service, network
        self.clock, self.sleep, self.poll_s = clock, sleep, poll_s
        #: When this update began (the engine's clock, from the spec's UpdatedAt): tasks
        #: created before are the old release's.
        self.image = ""
        #: The swarm's nodes as last read (`_read_nodes`): once per watch, then again only
        #: when a look needs them fresh (`_nodes_matter`).
        self._nodes: dict[str, NodeInfo] | None = None
        #: The service's tasks (IDs) before `start` wrote the spec: any other task is new.
        self._before: set[str] = set()

    # -- acting --------------------------------------------------------------------------

    def start(self, image: str, policy: UpdatePolicy, *, replicas: int | None = None) -> None:
        """Write the service's spec with `image` and `policy` (and `replicas`: a service
        scaled to 0 comes back with new tasks of `image`): Swarm begins the update."""
        found = self.api.inspect_service(self.service)
        version = int((found.get("Version") or {}).get("Index", 0))
        spec = updated_spec(found.get("Spec") or {}, image, policy, replicas=replicas)
        self._before = {str(t.get("ID", "")) for t in self.api.tasks(str(found.get("ID", "")))}
        self.image = image
        self.api.post_spec(str(found.get("ID", self.service)), version, spec, rollback=False)

    def roll_back(self) -> None:
        """Swarm's rollback of the update (in progress, paused, or completed): back to the
        previous spec, by the spec's RollbackConfig."""
        found = self.api.inspect_service(self.service)
        version = int((found.get("Version") or {}).get("Index", 0))
        self.api.post_spec(
            str(found.get("ID", self.service)), version, found.get("Spec") or {}, rollback=True
        )

    # -- looking -------------------------------------------------------------------------

    def progress(self) -> UpdateProgress:
        """One look at the service: its UpdateStatus and tasks, and which of this update's
        tasks are stranded on a node that is down. The node list is read on the first look
        (and after `forget_nodes`), then again only when this look needs it fresh."""
        found = self.api.inspect_service(self.service)
        status = found.get("UpdateStatus") or {}
        image = image_of(found.get("Spec") or {})
        since = str(status.get("StartedAt") or "")
        raw = [t for t in self.api.tasks(str(found.get("ID", ""))) if t]
        tasks = self._typed(raw)
        if self._nodes is None or self._nodes_matter(tasks, image, since):
            self._nodes = self._read_nodes()
            tasks = self._typed(raw)
        current = tuple(
            sorted(
                (t for t in tasks if t.desired_state in MEANT_TO_RUN),
                key=lambda t: (t.slot or 0, t.created_at),
            )
        )
        failed = tuple(
            t
            for t in tasks
            if t.state in ("failed", "rejected") and (not since or t.created_at >= since)
        )
        down = self._down()
        stranded = tuple(t for t in tasks if t.node_id in down and _of_this_update(t, image, since))
        return UpdateProgress(
            state=str(status.get("State") or ""),
            message=str(status.get("Message") or ""),
            image=image,
            previous_image=image_of(found.get("PreviousSpec") or {}),
            tasks=current,
            failed=failed,
            stranded=stranded,
        )

    def forget_nodes(self) -> None:
        """The next look reads the node list again (each watch begins so)."""
        self._nodes = None

    def _read_nodes(self) -> dict[str, NodeInfo]:
        return {node.id: node for node in (_node(raw) for raw in self.api.nodes())}

    def _typed(self, raw: Sequence[Mapping[str, Any]]) -> list[TaskState]:
        nodes = self._nodes or {}
        return [task_state(t, service=self.service, nodes=nodes, network=self.network) for t in raw]

    def _down(self) -> set[str]:
        return {node_id for node_id, node in (self._nodes or {}).items() if node.state == "down"}

    def _nodes_matter(self, tasks: Sequence[TaskState], image: str, since: str) -> bool:
        """Whether this look needs the node list read again: a live task names a node not
        read yet (a task stopped long ago may name a node that left the swarm: it would ask
        on every look), or a task of this update may be stranded: Swarm is shutting it down
        while it has not stopped (what Swarm does to the tasks of a node it sees down: their
        desired state becomes shutdown, their state stays the last their node reported,
        measured in tests/swarm/test_node_loss.py), or it is on a node last read as down
        (which may be back). A look with neither has nothing a node's state would change."""
        down = self._down()
        for task in tasks:
            if task.node_id and task.node_id not in (self._nodes or {}) and task.state not in GONE:
                return True
            if _of_this_update(task, image, since) and (
                task.desired_state not in MEANT_TO_RUN or task.node_id in down
            ):
                return True
        return False

    def watch(
        self,
        *,
        replicas: int,
        timeout_s: float,
        check: TaskCheck | None = None,
        on_progress: Callable[[UpdateProgress], None] | None = None,
        end_on_failed_task: bool = False,
    ) -> UpdateProgress:
        """Wait until `replicas` tasks of the new image run and Swarm says the update
        completed. Each new task is given to `check` once, when it first runs. Raises
        UpdateFailed when Swarm paused the update (a task failed), or rolled it back, or
        `timeout_s` passed; the update is left as it is (the caller rolls back).

        :param end_on_failed_task: a new task of the image that failed (or was rejected)
            ends the watch at once. For tasks started on a service scaled to 0: Swarm runs
            no update there (nothing to replace), so it never pauses, and would only restart
            the failed task again until the deadline."""
        deadline = self.clock() + timeout_s
        self.forget_nodes()
        checked: set[str] = set()
        last = ""
        while True:
            progress = self.progress()
            if on_progress is not None and progress.describe() != last:
                last = progress.describe()
                on_progress(progress)
            if check is not None:
                for task in progress.running(self.image):
                    if task.id not in checked:
                        checked.add(task.id)
                        check(task)
            if progress.state in (PAUSED, ROLLBACK_STARTED, ROLLBACK_PAUSED, ROLLBACK_COMPLETED):
                raise UpdateFailed(self._why(progress), progress)
            failed = [
                t for t in progress.failed if t.image == self.image and t.id not in self._before
            ]
            if end_on_failed_task and failed:
                errors = "; ".join(sorted({t.error or t.state for t in failed}))
                raise UpdateFailed(
                    f"a new task of {self.service} ({self.image}) failed: {errors}", progress
                )
            if progress.stranded:
                lost = ", ".join(sorted({t.node or t.node_id for t in progress.stranded}))
                raise UpdateFailed(
                    f"the update of {self.service} to {self.image} lost a new task: node "
                    f"{lost} went down during it (Swarm keeps such an update in progress)",
                    progress,
                )
            new = progress.running(self.image)
            if (
                progress.state in (COMPLETED, "")
                and len(new) >= replicas
                and all(t.image == self.image for t in progress.tasks)
            ):
                return progress
            if self.clock() >= deadline:
                raise UpdateFailed(
                    f"the update of {self.service} to {self.image} did not finish within "
                    f"{timeout_s:.0f} s ({progress.describe()})",
                    progress,
                    timed_out=True,
                )
            self.sleep(min(self.poll_s, max(0.0, deadline - self.clock())))

    def wait_rolled_back(self, *, replicas: int, timeout_s: float) -> UpdateProgress:
        """Wait until Swarm's rollback completed and `replicas` tasks of the previous image
        run; UpdateFailed when it paused or `timeout_s` passed."""
        deadline = self.clock() + timeout_s
        self.forget_nodes()
        while True:
            progress = self.progress()
            if progress.state == ROLLBACK_PAUSED:
                raise UpdateFailed(self._why(progress), progress)
            back = [t for t in progress.tasks if t.running and t.image == progress.image]
            if (
                progress.state == ROLLBACK_COMPLETED
                and len(back) >= replicas
                and all(t.image == progress.image for t in progress.tasks)
            ):
                return progress
            if self.clock() >= deadline:
                raise UpdateFailed(
                    f"the rollback of {self.service} did not finish within {timeout_s:.0f} s "
                    f"({progress.describe()})",
                    progress,
                    timed_out=True,
                )
            self.sleep(min(self.poll_s, max(0.0, deadline - self.clock())))

    def _why(self, progress: UpdateProgress) -> str:
        errors = "; ".join(sorted({t.error for t in progress.failed if t.error}))
        said = progress.message or progress.state
        return f"the update of {self.service} to {self.image} stopped: {said}" + (
            f" (tasks: {errors})" if errors else ""
        )


def _of_this_update(task: TaskState, image: str, since: str) -> bool:
    """A task of the update that started at `since` to `image`, not stopped yet: one that
    is stranded when its node is down."""
    return (
        task.image == image and task.state not in GONE and (not since or task.created_at >= since)
    )


__all__ = [
    "COMPLETED",
    "PAUSED",
    "ROLLBACK_COMPLETED",
    "ROLLBACK_PAUSED",
    "ROLLBACK_STARTED",
    "SETTLED",
    "UPDATING",
    "SdkServiceApi",
    "ServiceApi",
    "ServiceUpdate",
    "TaskCheck",
    "UpdateFailed",
    "UpdatePolicy",
    "UpdateProgress",
    "updated_spec",
]
