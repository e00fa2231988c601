"""steps/deploy_swarm.py without a cluster: the update policy from the environment's
settings, the smoke check of a new task, and when a failed update restores the data."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from deploytools import proxy
from deploytools.config import SwarmSettings
from deploytools.engine.swarm import NodeInfo, TaskState
from deploytools.errors import CheckFailed
from deploytools.proxy_settings import HealthAnswer
from deploytools.steps import deploy_swarm
from deploytools.store.records import ReleaseRecord


def task(address: str = "10.0.1.5") -> TaskState:
    return TaskState(
        id="abcdef0123456789",
        service="dtswd_app",
        slot=1,
        node_id="n1",
        node="dtsw-node-2",
        state="running",
        desired_state="running",
        image="app:2",
        container_id="c1",
        address=address,
        error="",
        message="",
        exit_code=None,
        created_at="",
        updated_at="",
    )


def resolved(expect: Any = None) -> Any:
    return SimpleNamespace(app_port=8080, health=HealthAnswer("/health", 200, expect))


def test_the_update_policy_leaves_time_for_the_check_between_batches() -> None:
    platform: Any = SimpleNamespace(
        settings=SwarmSettings(update_parallelism=2, update_delay_s=0.0, update_monitor_s=7.0)
    )
    policy = deploy_swarm.policy(platform)
    assert (policy.parallelism, policy.monitor_s) == (2, 7.0)
    assert policy.delay_s == deploy_swarm.BATCH_CHECK_S
    assert (policy.order, policy.failure_action) == ("start-first", "pause")
    platform.settings = SwarmSettings(update_delay_s=30.0)
    assert deploy_swarm.policy(platform).delay_s == 30.0


def test_the_smoke_check_asks_the_task_at_its_address_from_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, int, str]] = []

    def ask(gateway: Any, address: str, port: int, path: str, *, timeout_s: float) -> Any:
        asked.append((address, port, path))
        return proxy.Answer(200, '{"status": "ok"}')

    monkeypatch.setattr(deploy_swarm.proxy, "ask", ask)
    deploy_swarm.smoke(object(), task(), resolved({"status": "ok"}))  # type: ignore[arg-type]
    assert asked == [("10.0.1.5", 8080, "/health")]


def test_a_task_that_answers_otherwise_or_has_no_address_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        deploy_swarm.proxy, "ask", lambda *a, **k: proxy.Answer(503, '{"status": "down"}')
    )
    with pytest.raises(CheckFailed, match=r"task abcdef012345 on dtsw-node-2 failed.*503"):
        deploy_swarm.smoke(object(), task(), resolved())  # type: ignore[arg-type]
    with pytest.raises(CheckFailed, match="no address on the network"):
        deploy_swarm.smoke(object(), task(address=""), resolved())  # type: ignore[arg-type]


def record(**changes: Any) -> ReleaseRecord:
    values: dict[str, Any] = {
        "id": "0002",
        "environment": "prod",
        "kind": "deploy",
        "who": "me",
        "started": "2026-12-07T06:00:00Z",
        "image": "app:2",
        "image_id": "sha256:2",
        "revision_before": "0001",
        "backup_id": "b1",
    }
    values.update(changes)
    return ReleaseRecord(**values)


@pytest.mark.parametrize(
    ("changes", "restored"),
    [
        ({"revision_after": "0002", "expand_only": False}, "b1"),
        ({"revision_after": "0002", "expand_only": True}, None),
        ({"revision_after": "0002", "expand_only": None}, None),
        ({"revision_after": "0001", "expand_only": False}, None),
        ({"revision_after": "0002", "expand_only": False, "backup_id": None}, None),
    ],
)
def test_a_failed_update_restores_the_data_only_when_the_migration_was_not_expand_only(
    monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], restored: str | None
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        deploy_swarm.backup_step, "restore_in", lambda session, b, **k: calls.append(b)
    )
    session: Any = SimpleNamespace(progress=lambda message: None)
    failed = record(**changes)
    assert deploy_swarm.restore_if_needed(session, failed) == restored
    assert calls == ([restored] if restored else [])
    assert failed.restored_backup == restored


def test_the_nodes_that_went_down_were_drained_or_left_are_named() -> None:
    def node(id_: str, state: str = "ready", availability: str = "active") -> NodeInfo:
        return NodeInfo(id_, f"dtsw-node-{id_}", f"10.0.0.{id_}", "worker", availability, state)

    before = [node("1"), node("2"), node("3"), node("4", state="down")]
    after = [node("1"), node("2", state="down"), node("3", availability="drain"), node("5")]
    assert deploy_swarm.node_changes(before, after) == [
        "node dtsw-node-2 went down during the release",
        "node dtsw-node-3 was drained during the release",
        "node dtsw-node-4 left the swarm during the release",
    ]
    assert deploy_swarm.node_changes(after, after) == []


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({}, "the update never started: app:1 still serves"),
        (
            {"revision_after": "0002"},
            "the update never started: app:1 still serves (the schema stays at revision 0002)",
        ),
        ({"previous_image": None}, "no app ran before this deploy"),
    ],
)
def test_a_deploy_failing_before_its_update_asks_swarm_for_no_rollback(
    changes: dict[str, Any], says: str
) -> None:
    saved: list[ReleaseRecord] = []
    session: Any = SimpleNamespace(history=SimpleNamespace(save_release=saved.append))
    failed = record(**{"revision_after": "0001", "previous_image": "app:1", **changes})
    error = CheckFailed("the backup did not verify", untouched="no backup was kept")
    deploy_swarm.failed_before_update(session, failed, error)
    assert failed.outcome == "failed" and saved == [failed]
    assert failed.notes == [says]
    assert error.untouched == f"no backup was kept; {says}"
    assert error.message.startswith(f"deploy of {failed.image} to {failed.environment} failed: ")
