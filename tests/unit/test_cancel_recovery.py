"""A recreate deploy cancelled (SIGINT/SIGTERM -> KeyboardInterrupt) while its app is stopped
leaves a release serving: the decision, and the recovery over fakes of the engine and the
database (tests/integration/test_deploy_cancel.py runs it on the real engine)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.errors import (
    DeadlineExceeded,
    DeployCancelled,
    EnvironmentUnreachable,
    ExitCode,
)
from deploytools.steps import deploy as deploy_step
from deploytools.steps import deploy_cancel
from deploytools.steps import migrate as migrate_step
from deploytools.steps.deploy_cancel import NEW, OLD, choose
from deploytools.store.environment import EnvironmentStore
from deploytools.store.records import ReleaseRecord
from deploytools.target import Target, start_again
from tests.fakes.memory_store import MemoryStore

REPO_ROOT = Path(__file__).resolve().parents[2]
ONEOFF = "com.docker.compose.oneoff=True"


@pytest.mark.parametrize(
    ("phase", "before", "now", "serves"),
    [
        (None, "0001", "0001", OLD),  # before the stop began
        ("stop", "0001", "0001", OLD),
        ("migrate", "0001", "0001", OLD),  # not committed (rolled back)
        ("migrate", "0001", "0002", NEW),  # committed: the old release may not run on it
        ("migrate", None, "0002", NEW),  # a first migration committed
        ("migrate", "0002", "0002", OLD),  # a no-op migration (migrated by an earlier step)
        ("start", "0002", "0002", NEW),  # compose may have replaced the old container
        ("healthy", "0001", "0002", NEW),
    ],
)
def test_the_old_release_while_the_schema_is_its_own_else_the_new_one(
    phase: str | None, before: str | None, now: str | None, serves: str
) -> None:
    assert choose(phase, before, now) == serves


class _Container:
    def __init__(self, events: list[str], name: str, status: str, ip: str = "") -> None:
        self.events, self.name, self.status = events, name, status
        networks = {"stack": {"IPAddress": ip}} if ip else {}
        self.attrs: dict[str, Any] = {"NetworkSettings": {"Networks": networks}}

    def reload(self) -> None:
        pass

    def stop(self, *, timeout_s: int = 10) -> None:
        self.events.append(f"stop {self.name}")
        self.status = "exited"

    def start(self) -> None:
        self.events.append(f"start {self.name}")
        self.status = "running"

    def remove(self, *, force: bool = False) -> None:
        self.events.append(f"remove {self.name}")


class _Database:
    def __init__(self, events: list[str], revisions: list[str]) -> None:
        self.events, self.revisions = events, revisions

    def query(self, sql: str, *, timeout_s: float) -> str:
        if "pg_terminate_backend" in sql:
            self.events.append("terminate " + sql.split("IN (")[1].split(")")[0])
            return "1"
        return "0"

    def revision(self, *, timeout_s: float) -> str:
        return self.revisions[-1]


def _cancelled(
    monkeypatch: pytest.MonkeyPatch,
    *,
    at: str,
    revision_now: str,
    start_fails: bool = False,
    database_down: bool = False,
) -> tuple[list[str], ReleaseRecord, DeployCancelled]:
    """RecreateStrategy.replace interrupted (KeyboardInterrupt) in phase `at`, the database
    at `revision_now` after it; what the recovery did, the record, the error."""
    events: list[str] = []
    old = _Container(events, "app-1", "running")
    migration = _Container(events, "app-run-1", "running", ip="172.20.0.9")
    revisions = ["0001"]

    def interrupt() -> None:
        revisions.append(revision_now)
        raise KeyboardInterrupt("SIGINT received")

    def run_in(session: object, **kwargs: object) -> object:
        if at == "migrate":
            interrupt()
        return SimpleNamespace(revision_after=revision_now)

    def start(services: object, *, env: Any = None, what: str = "", timeout_s: float = 0) -> None:
        events.append(f"compose up {env['APP_IMAGE']} within {timeout_s:.0f} s")
        if at == "start" and "compose up" not in " ".join(events[:-1]):
            interrupt()
        if start_fails and "recovering" in events:
            raise DeadlineExceeded("compose up did not finish within 7 s")
        old.status = "running"  # (stands for the new release's container)

    def stop(services: object, *, what: str = "") -> None:
        old.stop()

    target = SimpleNamespace(
        project="rbac-production",
        config=load_config(REPO_ROOT / "deploy.toml"),
        running=lambda service: [c for c in (old,) if c.status == "running"],
        engine=SimpleNamespace(
            containers=lambda labels, all: (
                [migration] if "com.docker.compose.oneoff=True" in labels else []
            )
        ),
        start=start,
        stop=stop,
    )
    monkeypatch.setattr(migrate_step, "run_in", run_in)
    monkeypatch.setattr(deploy_step, "wait_app_healthy", lambda session: None)

    def database(target: object) -> _Database:
        if database_down:
            raise EnvironmentUnreachable('the database service "db" is not running')
        return _Database(events, revisions)

    monkeypatch.setattr(deploy_cancel.Database, "of", database)
    monkeypatch.setattr(
        deploy_cancel, "wait_until_healthy", lambda c, timeout_s: events.append("healthy")
    )
    ctx = StepContext(config=target.config)
    history = EnvironmentStore(MemoryStore(), "production")  # type: ignore[arg-type]

    def progress(message: str) -> None:
        if "recovering" in message:
            events.append("recovering")

    session: Any = SimpleNamespace(
        ctx=ctx, target=target, history=history, progress=progress, refresh_lock=lambda: None
    )
    record = ReleaseRecord(
        id="0007",
        environment="production",
        kind="deploy",
        who="ci",
        started="2026-12-07T03:00:00Z",
        image="ghcr.io/x:2",
        image_id="sha256:new",
        previous_image="ghcr.io/x:1",
        revision_before="0001",
    )
    with pytest.raises(DeployCancelled) as caught:
        deploy_step.RecreateStrategy().replace(session, record, deploy_step.Phases(session, record))
    [saved] = history.releases()
    assert (saved.outcome, saved.notes) == (record.outcome, record.notes)
    return events, record, caught.value


def test_cancelled_before_the_migration_committed_the_same_old_containers_serve_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, record, error = _cancelled(monkeypatch, at="migrate", revision_now="0001")
    # The migration cannot commit any more (its container and its sessions end) before the
    # revision is read; then the very container that was stopped starts again.
    assert events[events.index("recovering") :] == [
        "recovering",
        "remove app-run-1",
        "terminate '172.20.0.9'::inet",
        "start app-1",
        "healthy",
    ]
    assert record.outcome == "interrupted"
    assert "cancelled (SIGINT received) in its migrate phase" in (record.error or "")
    assert "the previous release (ghcr.io/x:1) serves again" in record.notes[-1]
    assert "untouched at revision 0001" in record.notes[-1]
    assert error.exit_code == ExitCode.CANCELLED
    assert error.untouched == record.notes[-1]
    assert "deploytools deploy --env production --image ghcr.io/x:2" in (error.hint or "")


def test_cancelled_after_the_migration_committed_the_new_release_is_started_to_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, record, error = _cancelled(monkeypatch, at="migrate", revision_now="0002")
    after = events[events.index("recovering") :]
    assert after[-2:] == ["compose up ghcr.io/x:2 within 7 s", "healthy"]
    assert "start app-1" not in after
    # It serves, healthy: the current release; the error still says it was cancelled.
    assert record.outcome == "succeeded" and record.revision_after == "0002"
    assert "started to the end and serves" in record.notes[-1]
    assert "cancelled" in error.message


def test_cancelled_while_starting_the_new_release_finishes_starting_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, record, _ = _cancelled(monkeypatch, at="start", revision_now="0002")
    after = events[events.index("recovering") :]
    assert after == ["recovering", "compose up ghcr.io/x:2 within 7 s", "healthy"]
    assert record.outcome == "succeeded"


def test_a_new_release_that_cannot_be_started_in_time_is_said_with_what_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, record, error = _cancelled(monkeypatch, at="start", revision_now="0002", start_fails=True)
    assert record.outcome == "interrupted"
    assert "could NOT be started in time" in (error.untouched or "")
    assert "may be DOWN" in (error.untouched or "")
    assert "migration had committed (revision 0002, was 0001)" in record.notes[-1]
    assert "deploytools deploy --env production --image ghcr.io/x:2" in (error.hint or "")
    assert "deploytools rollback --env production" in (error.hint or "")


def test_a_revision_that_cannot_be_read_starts_nothing_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, record, error = _cancelled(
        monkeypatch, at="migrate", revision_now="0001", database_down=True
    )
    after = events[events.index("recovering") :]
    assert after == ["recovering", "remove app-run-1"]  # (its sessions: no database to ask)
    assert record.outcome == "interrupted"
    assert "nothing was started: the database's revision could not be read" in record.notes[-1]
    assert "deploytools status --env production" in (error.hint or "")


def test_start_again_stops_a_container_an_interrupted_stop_left_running_first() -> None:
    events: list[str] = []
    stopping = _Container(events, "a", "running")  # the engine still carries out the stop
    stopped = _Container(events, "b", "exited")
    start_again([stopping, stopped], stop_timeout_s=2)  # type: ignore[list-item]
    assert events == ["stop a", "start a", "start b"]


def test_paused_starts_the_containers_again_when_its_stop_is_interrupted() -> None:
    events: list[str] = []
    first = _Container(events, "a", "running")

    class _Interrupted(_Container):
        """Its first stop is interrupted mid-way: the engine still carries it out."""

        interrupted = False

        def stop(self, *, timeout_s: int = 10) -> None:
            if not self.interrupted:
                self.interrupted = True
                raise KeyboardInterrupt
            super().stop(timeout_s=timeout_s)

    second = _Interrupted(events, "b", "running")
    target: Any = SimpleNamespace(running=lambda service: [first, second])
    with pytest.raises(KeyboardInterrupt), Target.paused(target, "app", what="x"):
        pytest.fail("the block must not run")
    assert events == ["stop a", "start a", "stop b", "start b"]


def test_the_sql_that_ends_a_migrations_sessions_names_only_its_addresses() -> None:
    from deploytools.commands import postgres as pg

    sql = pg.terminate_clients_sql(["172.20.0.9", "fd00::9"])
    assert "pg_terminate_backend(pid)" in sql
    assert "client_addr IN ('172.20.0.9'::inet, 'fd00::9'::inet)" in sql
    assert "pid <> pg_backend_pid()" in sql
    assert pg.count_clients_sql(["1.2.3.4"]).startswith("SELECT count(*) FROM pg_stat_activity")
