"""The check steps on a Swarm environment, without a cluster: verify reads CPU and memory and
scans the logs of every running task's container, each named with its node; the migration
heads are asked in a task's container; monitor keys its per-task stats the same way; the
backward-compatibility run is reported not run. Compose names stay the containers' own.
tests/swarm/test_swarm_checks.py runs the real thing on a 3-node cluster."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.checks import prometheus
from deploytools.checks import suite as engine
from deploytools.checks.results import CheckResult, Verdict
from deploytools.commands import postgres as pg
from deploytools.config import Config, LogScan, MetricRule, parse_config
from deploytools.context import StepContext
from deploytools.engine.exec import ExecResult
from deploytools.engine.swarm import TaskState
from deploytools.platforms.placement import running_named
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.steps import check_suites, incident, migration_check, monitor
from tests.fakes.rbac_service import CONFIG, ENVIRON, FakeState, fake_service

SWARM_ENV = """
[environments.cluster]
docker_host = "tcp://10.0.0.1:2375"
compose_project = "dtswcunit"
base_url = "BASE_URL"
platform = "swarm"

[environments.cluster.swarm]
node_host = "tcp://{addr}:2375"
replicas = 3

[checks.logs]
patterns = ["Traceback"]
suites = ["verify"]
"""

MB = 1024 * 1024


class FakeContainer:
    """A task's container on its node: stats (CPU 25 %, `mb` of memory), logs, an exec."""

    def __init__(self, name: str, *, mb: int, logs: str = "", status: str = "running") -> None:
        self.name = name
        self.status = status
        self.mb = mb
        self.log_text = logs
        self.attrs: dict[str, Any] = {"State": {"StartedAt": "2026-12-07T06:00:00.123Z"}}
        self.execs: list[tuple[str, ...]] = []

    def stats(self, one_shot: bool = False) -> dict[str, Any]:
        return {
            "cpu_stats": {
                "cpu_usage": {"total_usage": 1_500_000_000},
                "system_cpu_usage": 4_000_000_000,
                "online_cpus": 1,
            },
            "precpu_stats": {
                "cpu_usage": {"total_usage": 1_000_000_000},
                "system_cpu_usage": 2_000_000_000,
            },
            "memory_stats": {"usage": self.mb * MB, "stats": {"inactive_file": 0}},
        }

    def logs(self, **options: Any) -> bytes:
        return self.log_text.encode()

    def exec(self, argv: Any, **options: Any) -> ExecResult:
        self.execs.append(tuple(argv))
        return ExecResult(0, b"3f2a1c0d9e8b (head)\n", b"")


def task(slot: int, node: str, container: str, *, state: str = "running") -> TaskState:
    return TaskState(
        id=f"task{slot}",
        service="dtswcunit_app",
        slot=slot,
        node_id=f"id-{node}",
        node=node,
        state=state,
        desired_state="running",
        image="svc:2",
        container_id=container,
        address=f"10.0.1.{slot}",
        error="",
        message="",
        exit_code=None,
        created_at="",
        updated_at="",
    )


class FakeSwarm(SwarmPlatform):
    """A SwarmPlatform whose tasks and containers are given: three tasks of the app on three
    nodes, and a fourth task whose node does not answer (no container)."""

    def __init__(self, config: Config, environment: str = "cluster") -> None:
        super().__init__(config=config, environment=config.environment(environment))
        self.db_tasks: list[TaskState] = []
        self.by_id = {
            "c1": FakeContainer("dtswcunit_app.1.aaa", mb=100),
            "c2": FakeContainer("dtswcunit_app.2.bbb", mb=120, logs="ok\nTraceback (x)\n"),
            "c3": FakeContainer("dtswcunit_app.3.ccc", mb=140),
        }
        self.app_tasks = [
            task(1, "node-1", "c1"),
            task(2, "node-2", "c2"),
            task(3, "node-3", "c3"),
            task(4, "node-4", "gone"),
        ]

    def tasks(self, service: str, *, desired_state: str | None = None) -> list[TaskState]:
        return list(self.app_tasks if service == "app" else self.db_tasks)

    def task_container(self, task: TaskState) -> Any:
        return self.by_id.get(task.container_id)


def swarm_config(tmp_path: Path, url: str) -> Config:
    text = (CONFIG + SWARM_ENV).replace("BASE_URL", url)
    return parse_config(text, tmp_path / "deploy.toml")


def swarm_ctx(config: Config) -> tuple[StepContext, FakeSwarm]:
    ctx = StepContext(config)
    fake = FakeSwarm(config)
    ctx._swarms["cluster"] = fake
    return ctx, fake


def test_running_named_names_each_task_with_its_node(tmp_path: Path) -> None:
    _, fake = swarm_ctx(swarm_config(tmp_path, "http://127.0.0.1:9"))
    assert list(running_named(fake, "app")) == [
        "dtswcunit_app.1.aaa on node-1",
        "dtswcunit_app.2.bbb on node-2",
        "dtswcunit_app.3.ccc on node-3",
    ]


def test_running_named_keeps_compose_names_and_drops_nothing() -> None:
    class Target:
        def containers(self, service: str, include_stopped: bool = True) -> list[FakeContainer]:
            assert (service, include_stopped) == ("app", False)
            return [FakeContainer("svc-app-1", mb=1), FakeContainer("svc-app-2", mb=1)]

    assert list(running_named(Target(), "app")) == ["svc-app-1", "svc-app-2"]  # type: ignore[arg-type]


def test_verify_on_swarm_reads_every_task_on_its_node(tmp_path: Path) -> None:
    state = FakeState(users={"root": ("admin-password-123", ["admin"])})
    with fake_service(state) as url:
        ctx, _ = swarm_ctx(swarm_config(tmp_path, url))
        report = check_suites.run(ctx, environment="cluster", suite="verify", environ=ENVIRON)
    by_name = {r.name: r for r in report.results}
    for slot, node, mb in [(1, "node-1", 100), (2, "node-2", 120), (3, "node-3", 140)]:
        shown = f"dtswcunit_app.{slot}.{'abc'[slot - 1] * 3} on {node}"
        assert by_name[f"cpu {shown}"].measured == "25.0%"
        assert by_name[f"memory {shown}"].measured == f"{mb} MB"
    # The log scan reads each task's container and says which one, on which node, failed.
    assert by_name["logs: no errors in dtswcunit_app.1.aaa on node-1"].verdict is Verdict.PASS
    failed = by_name["logs: no errors in dtswcunit_app.2.bbb on node-2"]
    assert failed.verdict is Verdict.FAIL and "Traceback (x)" in failed.detail
    assert not [n for n in by_name if "node-4" in n]


def test_the_migration_heads_are_asked_in_a_task_container(tmp_path: Path) -> None:
    ctx, fake = swarm_ctx(swarm_config(tmp_path, "http://127.0.0.1:9"))
    platform = ctx.platform("cluster")
    heads = engine.head_revisions(platform, "app", ("alembic", "heads"))
    assert heads == ("3f2a1c0d9e8b",)
    assert fake.by_id["c1"].execs == [("alembic", "heads")]


def test_the_log_scan_of_a_service_without_a_running_task_fails(tmp_path: Path) -> None:
    _, fake = swarm_ctx(swarm_config(tmp_path, "http://127.0.0.1:9"))
    fake.app_tasks = [task(1, "node-1", "gone")]
    since = datetime(2026, 12, 7, tzinfo=UTC)
    [result] = engine.log_scan(fake, LogScan(patterns=("x",)), service="app", since=since)
    assert result.verdict is Verdict.FAIL and result.detail == "no running app container to read"


def test_backward_compatibility_is_not_run_on_swarm(tmp_path: Path) -> None:
    ctx, _ = swarm_ctx(swarm_config(tmp_path, "http://127.0.0.1:9"))
    session: Any = None  # not used: nothing is started
    [result] = check_suites.backward_compatibility(ctx, "cluster", "svc:1", session)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.measured == "not run"
    assert result.detail.startswith("not run on Swarm: ")


def test_monitor_keys_each_task_by_container_and_node(tmp_path: Path) -> None:
    config = swarm_config(tmp_path, "http://127.0.0.1:9")
    ctx, fake = swarm_ctx(config)
    watch = monitor._Watch(ctx, "cluster", ENVIRON)
    try:
        before = watch.read_stats()
        fake.app_tasks = fake.app_tasks[1:]  # slot 1's task went meanwhile: no window for it
        results = watch.usage_results(before, watch.read_stats())
    finally:
        watch.close()
    assert sorted(before) == [
        "dtswcunit_app.1.aaa on node-1",
        "dtswcunit_app.2.bbb on node-2",
        "dtswcunit_app.3.ccc on node-3",
    ]
    assert [r.name for r in results] == [
        "cpu dtswcunit_app.2.bbb on node-2",
        "memory dtswcunit_app.2.bbb on node-2",
        "cpu dtswcunit_app.3.ccc on node-3",
        "memory dtswcunit_app.3.ccc on node-3",
    ]


@pytest.mark.parametrize("environment", ["local", "cluster"])
def test_the_check_steps_take_the_platform_not_the_compose_target(
    tmp_path: Path, environment: str
) -> None:
    """ctx.target refuses a Swarm environment; the check steps never ask for it."""
    ctx, _ = swarm_ctx(swarm_config(tmp_path, "http://127.0.0.1:9"))
    watch = monitor._Watch(ctx, environment, ENVIRON)
    watch.close()
    assert watch.platform is ctx.platform(environment)


AUTH = MetricRule(
    name="auth success",
    metric="logins_total",
    threshold="auth_success_percent",
    match={"outcome": "success"},
    among={"outcome": "success|invalid_credentials"},
    below=False,
)


def scrape(started: float | None, success: int, invalid: int = 0) -> list[prometheus.Sample]:
    """One /metrics answer of a process started at `started` (None: it does not say)."""
    text = f'logins_total{{outcome="success"}} {success}\n'
    text += f'logins_total{{outcome="invalid_credentials"}} {invalid}\n'
    if started is not None:
        text += f"process_start_time_seconds {started}\n"
    return prometheus.parse(text)


def watch_with_rule(tmp_path: Path, environment: str) -> monitor._Watch:
    config = swarm_config(tmp_path, "http://127.0.0.1:9")
    config = dataclasses.replace(config, checks=dataclasses.replace(config.checks, metrics=(AUTH,)))
    ctx, _ = swarm_ctx(config)
    watch = monitor._Watch(ctx, environment, ENVIRON)
    watch.close()
    return watch


def window(result: CheckResult) -> tuple[Verdict, Any, Any]:
    data = result.data or {}
    return result.verdict, data.get("k"), data.get("n")


def test_replica_of_is_the_process_start_time_and_tagged_keeps_replicas_apart() -> None:
    a, b = scrape(100.5, 50), scrape(200.25, 10)
    assert (prometheus.replica_of(a), prometheus.replica_of(scrape(None, 1))) == ("100.5", "")
    both = prometheus.tagged(a, "100.5") + prometheus.tagged(b, "200.25")
    assert prometheus.counter_ratio(None, both, "logins_total", {}, {}) == (60, 60)
    assert {s.label("deploytools_replica") for s in both} == {"100.5", "200.25"}


def test_on_swarm_a_metrics_window_is_two_scrapes_of_the_same_replica(tmp_path: Path) -> None:
    """Through the proxy, scrapes reach replicas A, B, A, B: B's first scrape only opens its
    window; A's and B's windows are their own; the whole watch adds them up."""
    watch = watch_with_rule(tmp_path, "cluster")
    assert watch.per_replica
    watch.first_metrics = watch.previous_metrics = scrape(100.5, 50, 5)  # A, as start() does
    watch.rule_results(watch.first_metrics)
    [opened] = watch.rule_results(scrape(200.25, 12))  # B: no window yet
    assert opened.verdict is Verdict.INCONCLUSIVE
    assert opened.measured == "the first scrape of this replica"
    assert opened.detail == "its window opens here (the process started at 200.25)"
    [a_window] = watch.rule_results(scrape(100.5, 53, 5))  # A: 3 logins, all succeeded
    [b_window] = watch.rule_results(scrape(200.25, 14, 1))  # B: 2 succeeded, 1 refused
    assert window(a_window)[1:] == (3, 3)
    assert window(b_window)[1:] == (2, 3)
    assert window(watch.whole_watch()["auth success"])[1:] == (5, 6)


def test_on_compose_the_window_is_the_previous_scrape_as_before(tmp_path: Path) -> None:
    """One container answers every scrape: a new start time is a restart, its counters from
    zero (the later scrape alone is the window), never a scrape left unjudged."""
    watch = watch_with_rule(tmp_path, "local")
    assert not watch.per_replica
    watch.first_metrics = watch.previous_metrics = scrape(100.5, 50, 5)
    [restarted] = watch.rule_results(scrape(200.25, 12))
    assert window(restarted)[1:] == (12, 12)
    watch.previous_metrics = scrape(200.25, 12)
    [later] = watch.rule_results(scrape(200.25, 14, 1))
    assert window(later)[1:] == (2, 3)


class FakeDatabase(FakeContainer):
    """The database task's container: at revision 0002."""

    @property
    def env(self) -> dict[str, str]:
        return {"POSTGRES_USER": "svc"}

    def exec(self, argv: Any, **options: Any) -> ExecResult:
        self.execs.append(tuple(argv))
        answer = b"t\n" if pg.ALEMBIC_TABLE_SQL in " ".join(argv) else b"0002\n"
        return ExecResult(0, answer, b"")


def test_a_first_release_reads_production_revision_on_its_swarm_database(tmp_path: Path) -> None:
    text = (CONFIG + SWARM_ENV).replace("BASE_URL", "http://127.0.0.1:9")
    config = parse_config(
        text.replace("environments.cluster", "environments.production"), tmp_path / "d.toml"
    )
    ctx = StepContext(config)
    fake = FakeSwarm(config, "production")
    fake.by_id["db"] = FakeDatabase("dtswcunit_db.1.ddd", mb=50)
    fake.db_tasks = [task(1, "node-1", "db")]
    ctx._swarms["production"] = fake
    baseline = migration_check.production_baseline(ctx)
    assert baseline == migration_check.Baseline(
        "0002", "the first release: production's database is at it"
    )


def test_the_incident_report_fetches_logs_from_the_tasks_containers(tmp_path: Path) -> None:
    config = swarm_config(tmp_path, "http://127.0.0.1:9")
    _, fake = swarm_ctx(config)
    session: Any = SimpleNamespace(platform=fake)
    lines, source = incident._fetch_logs(session, config, {"started": "2026-12-07T06:00:00Z"})
    assert lines == ["ok", "Traceback (x)"]
    assert source.startswith(
        "fetched now from dtswcunit_app.1.aaa, dtswcunit_app.2.bbb, dtswcunit_app.3.ccc "
    )
