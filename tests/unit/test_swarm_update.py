"""engine/swarm_update.py against a fake of the engine's service API: the spec written, the
watch of an update batch by batch (checks, pause, deadline), Swarm's rollback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from deploytools.engine.swarm import TaskState
from deploytools.engine.swarm_update import (
    SdkServiceApi,
    ServiceUpdate,
    UpdateFailed,
    UpdatePolicy,
    updated_spec,
)

V1, V2 = "app:1", "app:2"
SERVICE = "dtswd_app"


def spec(image: str = V1) -> dict[str, Any]:
    return {
        "Name": SERVICE,
        "TaskTemplate": {"ContainerSpec": {"Image": image, "Env": ["A=1"]}},
        "Mode": {"Replicated": {"Replicas": 3}},
    }


def task(
    tid: str, image: str, state: str = "running", desired: str = "running", err: str = ""
) -> dict[str, Any]:
    return {
        "ID": tid,
        "ServiceID": "sid",
        "Slot": int(tid[-1]) if tid[-1].isdigit() else 1,
        "NodeID": "n1",
        "DesiredState": desired,
        "CreatedAt": f"2026-12-07T06:00:0{tid[-1] if tid[-1].isdigit() else 0}Z",
        "Status": {"State": state, "Err": err, "ContainerStatus": {"ContainerID": "c" + tid}},
        "Spec": {"ContainerSpec": {"Image": image}},
        "NetworksAttachments": [
            {"Network": {"Spec": {"Name": "dtswd_default"}}, "Addresses": [f"10.0.0.{tid[-1]}/24"]}
        ],
    }


def node(nid: str, state: str = "ready") -> dict[str, Any]:
    return {
        "ID": nid,
        "Description": {"Hostname": f"dtsw-node-{nid[-1]}"},
        "Status": {"State": state},
    }


#: n1 ready, n2 down.
NODES = [node("n1", ""), node("n2", "down")]


class FakeApi:
    """Each inspect returns the next of `looks` (the last one again at the end): a scripted
    update as the engine would report it. `nodes` answers the node list of the look
    (`node_looks`, by the look's index; NODES when not given), and counts the readings."""

    def __init__(
        self,
        looks: list[tuple[str, list[dict[str, Any]]]],
        image: str = V2,
        node_looks: list[list[dict[str, Any]]] | None = None,
    ) -> None:
        self.looks = looks
        self.image = image
        self.node_looks = node_looks
        self.node_reads: list[int] = []  # the look's index at each reading
        self.posted: list[tuple[str, int, Mapping[str, Any], bool]] = []
        self._i = -1

    def inspect_service(self, name: str) -> Mapping[str, Any]:
        assert name == SERVICE
        self._i = min(self._i + 1, len(self.looks) - 1)
        state = self.looks[self._i][0]
        return {
            "ID": "sid",
            "Version": {"Index": 41},
            "Spec": spec(self.image),
            "PreviousSpec": spec(V1),
            "UpdateStatus": {"State": state, "Message": f"update {state}"} if state else {},
        }

    def post_spec(
        self, service_id: str, version: int, spec: Mapping[str, Any], *, rollback: bool
    ) -> None:
        self.posted.append((service_id, version, spec, rollback))

    def tasks(self, service_id: str) -> Sequence[Mapping[str, Any]]:
        assert service_id == "sid"
        return self.looks[self._i][1]

    def nodes(self) -> Sequence[Mapping[str, Any]]:
        self.node_reads.append(self._i)
        return NODES if self.node_looks is None else self.node_looks[self._i]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.5)


def update(api: FakeApi, clock: Clock | None = None) -> ServiceUpdate:
    clock = clock or Clock()
    found = ServiceUpdate(api, SERVICE, network="dtswd_default", clock=clock, sleep=clock.sleep)
    found.image = V2
    return found


OLD = [task("o1", V1), task("o2", V1), task("o3", V1)]


def test_the_spec_written_has_the_image_and_the_update_policy_and_keeps_the_rest() -> None:
    before = spec()
    after = updated_spec(before, V2, UpdatePolicy(parallelism=2, delay_s=1.5, monitor_s=5))
    assert after["TaskTemplate"]["ContainerSpec"] == {"Image": V2, "Env": ["A=1"]}
    assert after["UpdateConfig"] == {
        "Parallelism": 2,
        "Delay": 1_500_000_000,
        "FailureAction": "pause",
        "Monitor": 5_000_000_000,
        "MaxFailureRatio": 0.0,
        "Order": "start-first",
    }
    assert after["RollbackConfig"]["Order"] == "start-first"
    assert after["RollbackConfig"]["FailureAction"] == "pause"
    assert after["Mode"] == {"Replicated": {"Replicas": 3}}
    assert before["TaskTemplate"]["ContainerSpec"]["Image"] == V1  # not changed in place


def test_start_writes_the_spec_at_its_version_and_roll_back_asks_for_the_previous() -> None:
    api = FakeApi([("", OLD)], image=V1)
    service = ServiceUpdate(api, SERVICE)
    service.start(V2, UpdatePolicy())
    service.roll_back()
    (sid, version, written, rollback), (_, _, _, back) = api.posted
    assert (sid, version, rollback, back) == ("sid", 41, False, True)
    assert written["TaskTemplate"]["ContainerSpec"]["Image"] == V2
    assert service.image == V2


def test_the_watch_checks_each_new_task_once_and_ends_when_swarm_completed() -> None:
    looks = [
        ("updating", [*OLD, task("n1", V2, "starting")]),
        ("updating", [task("n1", V2), task("o2", V1), task("o3", V1)]),
        ("updating", [task("n1", V2), task("n2", V2), task("o3", V1)]),
        ("updating", [task("n1", V2), task("n2", V2), task("n3", V2)]),
        ("completed", [task("n1", V2), task("n2", V2), task("n3", V2)]),
    ]
    checked: list[str] = []
    seen: list[str] = []
    api = FakeApi(looks)
    done = update(api).watch(
        replicas=3,
        timeout_s=60,
        check=lambda t: checked.append(f"{t.id} {t.address}"),
        on_progress=lambda p: seen.append(p.describe()),
    )
    assert checked == ["n1 10.0.0.1", "n2 10.0.0.2", "n3 10.0.0.3"]
    assert done.state == "completed" and len(done.running(V2)) == 3
    assert seen[0] == "updating: 3 running app:1, 1 starting app:2 (update updating)"
    # The node list is read once per watch: nothing in these looks needs it again.
    assert api.node_reads == [0]


def test_a_failing_check_ends_the_watch_with_its_error() -> None:
    looks = [("updating", [task("n1", V2), task("o2", V1), task("o3", V1)])]

    def bad(found: TaskState) -> None:
        raise RuntimeError(f"smoke check of {found.id} failed")

    with pytest.raises(RuntimeError, match="smoke check of n1 failed"):
        update(FakeApi(looks)).watch(replicas=3, timeout_s=60, check=bad)


def test_a_paused_update_raises_with_the_tasks_errors() -> None:
    failed = task("n1", V2, "failed", desired="shutdown", err="task: non-zero exit (3)")
    looks = [("paused", [failed, *OLD])]
    with pytest.raises(UpdateFailed) as raised:
        update(FakeApi(looks)).watch(replicas=3, timeout_s=60)
    assert "update paused" in raised.value.message
    assert "non-zero exit (3)" in raised.value.message
    assert not raised.value.timed_out
    assert [t.id for t in raised.value.progress.tasks] == ["o1", "o2", "o3"]


def test_the_watch_has_a_deadline() -> None:
    stuck = [("updating", [*OLD, task("n1", V2, "pending")])]
    clock = Clock()
    with pytest.raises(UpdateFailed) as raised:
        update(FakeApi(stuck), clock).watch(replicas=3, timeout_s=10)
    assert raised.value.timed_out
    assert "did not finish within 10 s" in raised.value.message
    assert 10 <= clock.now < 11


def test_the_watch_waits_for_every_old_task_to_go_even_when_swarm_says_completed() -> None:
    # A completed status read before the last old task left the list is not the end.
    looks = [
        ("completed", [task("n1", V2), task("n2", V2), task("n3", V2), task("o3", V1)]),
        ("completed", [task("n1", V2), task("n2", V2), task("n3", V2)]),
    ]
    api = FakeApi(looks)
    update(api).watch(replicas=3, timeout_s=60)
    assert api._i == 1


def test_waiting_for_the_rollback() -> None:
    looks = [
        ("rollback_started", [task("n1", V2), task("o2", V1), task("o3", V1)]),
        ("rollback_completed", OLD),
    ]
    done = update(FakeApi(looks, image=V1)).wait_rolled_back(replicas=3, timeout_s=60)
    assert done.state == "rollback_completed"
    assert [t.image for t in done.tasks] == [V1, V1, V1]
    paused = [("rollback_paused", [task("o1", V1, "failed", err="boom")])]
    with pytest.raises(UpdateFailed, match="boom"):
        update(FakeApi(paused, image=V1)).wait_rolled_back(replicas=3, timeout_s=60)


class FakeLowLevel:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    def _url(self, path: str, *args: str) -> str:
        return "http://engine" + path.format(*args)

    def _post_json(self, url: str, data: Any, params: Any) -> str:
        self.calls.append((url, data, params))
        return "response"

    def _raise_for_status(self, response: str) -> None:
        assert response == "response"


class FakeEngine:
    def __init__(self) -> None:
        self._sdk = type("Sdk", (), {"api": FakeLowLevel()})()


def test_the_sdk_adapter_posts_the_spec_and_the_rollback_parameter() -> None:
    engine = FakeEngine()
    api = SdkServiceApi(engine)  # type: ignore[arg-type]
    api.post_spec("sid", 7, {"Name": SERVICE}, rollback=False)
    api.post_spec("sid", 8, {"Name": SERVICE}, rollback=True)
    calls = engine._sdk.api.calls
    assert calls == [
        ("http://engine/services/sid/update", {"Name": SERVICE}, {"version": 7}),
        (
            "http://engine/services/sid/update",
            {"Name": SERVICE},
            {"version": 8, "rollback": "previous"},
        ),
    ]


def test_a_new_task_left_on_a_node_that_went_down_ends_the_watch_at_once() -> None:
    """Swarm keeps such an update "updating" for minutes (seen on the test cluster): the watch
    says what happened instead of waiting for its deadline."""
    stranded = {**task("n2", V2, "starting", desired="shutdown"), "NodeID": "n2"}
    looks = [("updating", [*OLD, stranded])]
    clock = Clock()
    with pytest.raises(UpdateFailed) as raised:
        update(FakeApi(looks), clock).watch(replicas=3, timeout_s=300)
    assert "node dtsw-node-2 went down" in raised.value.message
    assert not raised.value.timed_out
    assert clock.now == 0


def test_an_old_task_on_a_node_that_went_down_does_not_end_the_watch() -> None:
    old_there = {**task("o3", V1, "running"), "NodeID": "n2"}
    looks = [
        ("updating", [task("o1", V1), task("o2", V1), old_there]),
        ("completed", [task("n1", V2), task("n2", V2), task("n3", V2)]),
    ]
    update(FakeApi(looks)).watch(replicas=3, timeout_s=60)


def test_a_node_gone_down_mid_watch_is_read_once_swarm_shuts_its_new_task_down() -> None:
    """The node list read at the start says n2 is ready; once n2 is down, Swarm shuts its
    tasks down (desired state shutdown, the state its last report: "starting"): that look
    reads the nodes again and ends the watch."""
    on_n2 = {**task("n2", V2, "starting"), "NodeID": "n2"}
    lost = {**on_n2, "DesiredState": "shutdown"}
    looks = [
        ("updating", [*OLD, on_n2]),
        ("updating", [*OLD, on_n2]),
        ("updating", [*OLD, lost]),
    ]
    up, n2_down = [node("n1"), node("n2")], [node("n1"), node("n2", "down")]
    api = FakeApi(looks, node_looks=[up, n2_down, n2_down])
    clock = Clock()
    with pytest.raises(UpdateFailed) as raised:
        update(api, clock).watch(replicas=3, timeout_s=300)
    assert "node dtsw-node-2 went down" in raised.value.message
    assert not raised.value.timed_out
    # Read at the first look, not at the second (n2 was down, but no task said so yet), and
    # again at the third, which ended the watch with no sleep after it.
    assert api.node_reads == [0, 2]
    assert clock.now == 1.0


def test_a_node_read_as_down_is_read_again_before_a_new_task_there_counts_as_stranded() -> None:
    """n2 was down at the first reading and is back: the new task Swarm placed on it runs."""
    back = {**task("n2", V2), "NodeID": "n2"}
    looks = [
        ("updating", [task("n1", V2), task("o2", V1), task("o3", V1)]),
        ("updating", [task("n1", V2), back, task("o3", V1)]),
        ("completed", [task("n1", V2), back, task("n3", V2)]),
    ]
    api = FakeApi(looks, node_looks=[NODES, [node("n1"), node("n2")], [node("n1"), node("n2")]])
    done = update(api).watch(replicas=3, timeout_s=60)
    assert done.state == "completed"
    assert [t.node for t in done.tasks] == ["dtsw-node-1", "dtsw-node-2", "dtsw-node-1"]
    assert api.node_reads == [0, 1]


def test_a_task_on_a_node_not_read_yet_reads_the_nodes_again() -> None:
    on_n3 = {**task("n3", V2, "starting"), "NodeID": "n3"}
    looks = [("updating", [*OLD]), ("updating", [*OLD, on_n3])]
    api = FakeApi(looks, node_looks=[NODES, [*NODES, node("n3")]])
    found = update(api)
    first, second = found.progress(), found.progress()
    assert not first.stranded and not second.stranded
    assert [t.node for t in second.tasks if t.id == "n3"] == ["dtsw-node-3"]
    assert api.node_reads == [0, 1]
    found.progress()  # the same look again: nothing new to read
    assert api.node_reads == [0, 1]


def test_a_service_scaled_to_0_comes_back_with_the_image_at_its_replicas() -> None:
    after = updated_spec(spec(), V2, UpdatePolicy(), replicas=3)
    assert after["Mode"] == {"Replicated": {"Replicas": 3}}
    scaled: dict[str, Any] = {**spec(), "Mode": {"Replicated": {"Replicas": 0}}}
    api = FakeApi([("", [task("o1", V1, "shutdown", desired="shutdown")])], image=V1)
    service = ServiceUpdate(api, SERVICE)
    service.start(V2, UpdatePolicy(), replicas=2)
    assert api.posted[0][2]["Mode"] == {"Replicated": {"Replicas": 2}}
    assert updated_spec(scaled, V2, UpdatePolicy())["Mode"] == scaled["Mode"]


def test_a_new_task_that_fails_ends_a_watch_that_asks_so_and_old_failures_do_not() -> None:
    # Tasks started on a service at 0: Swarm runs no update (state ""), it restarts a failed
    # task again and again; the watch that asks ends at the first new one.
    old_failure = task("f1", V2, "failed", desired="shutdown", err="an earlier deploy's")
    api = FakeApi([("", [old_failure])], image=V1)
    clock = Clock()
    service = ServiceUpdate(api, SERVICE, clock=clock, sleep=clock.sleep)
    service.start(V2, UpdatePolicy(), replicas=3)
    new_failure = task("n2", V2, "failed", desired="shutdown", err="unhealthy container")
    api.looks = [
        ("", [old_failure, task("n1", V2, "starting")]),
        ("", [old_failure, new_failure, task("n3", V2, "starting")]),
    ]
    api._i = -1
    with pytest.raises(UpdateFailed, match=r"a new task of dtswd_app .* failed: unhealthy"):
        service.watch(replicas=3, timeout_s=60, end_on_failed_task=True)
    assert clock.now < 60
    # Without it the same looks go on to the deadline.
    api._i = -1
    with pytest.raises(UpdateFailed) as raised:
        service.watch(replicas=3, timeout_s=5)
    assert raised.value.timed_out
