"""A deploy to a brand-new environment: the database is started before the store's helper is
chosen (so the helper runs the database's image, with pg_restore), a pre-deploy backup that
fails changes nothing and is not "rolled back", and no message says the app is down when no
app ever ran. The real run is tests/integration/test_first_deploy.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools import session as sessions
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.errors import CheckFailed, DeployError, ExternalCommandFailed
from deploytools.steps import backup as backup_step
from deploytools.steps import deploy as deploy_step
from deploytools.store.environment import EnvironmentStore
from deploytools.store.files import FALLBACK_HELPER_IMAGE
from deploytools.store.records import ReleaseRecord
from tests.fakes.memory_store import MemoryStore

REPO_ROOT = Path(__file__).resolve().parents[2]
DB_IMAGE = "sha256:postgres"


class _NewEnvironment:
    """A target with no container at all until its database service is started."""

    def __init__(self, events: list[str], database: str) -> None:
        self.events, self.database = events, database
        self.name, self.project = "production", "new"
        self.started = False

    def _db(self) -> list[Any]:
        if not self.started:
            return []
        return [SimpleNamespace(image_id=DB_IMAGE, status="running")]

    def running(self, service: str) -> list[Any]:
        return self._db() if service == self.database else []

    def containers(self, service: str | None = None) -> list[Any]:
        return self._db() if service in (None, self.database) else []

    def start(self, services: list[str], *, what: str, env: object = None) -> None:
        self.events.append(f"start {' '.join(services)}")
        self.started = True

    @property
    def engine(self) -> object:
        return None


def _open(monkeypatch: pytest.MonkeyPatch, **options: bool) -> tuple[list[str], StepContext]:
    events: list[str] = []
    ctx = StepContext(config=load_config(REPO_ROOT / "deploy.toml"))
    target = _NewEnvironment(events, ctx.config.project.database_service)
    monkeypatch.setattr(ctx, "target", lambda environment: target)
    monkeypatch.setattr(
        sessions, "wait_until_healthy", lambda c, timeout_s: events.append("healthy")
    )

    @contextlib.contextmanager
    def open_store(engine: object, store: str, *, image: str, **kw: object) -> Iterator[Any]:
        events.append(f"helper {image}")
        yield MemoryStore()

    monkeypatch.setattr(sessions, "open_store", open_store)
    with sessions.open_environment(ctx, "production", **options):
        events.append("opened")
    return events, ctx


def test_a_deploys_environment_starts_the_database_before_the_helper_is_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, ctx = _open(monkeypatch, with_database=True)
    db = ctx.config.project.database_service
    assert events == [f"start {db}", "healthy", f"helper {DB_IMAGE}", "opened"]


def test_other_commands_do_not_start_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    events, _ = _open(monkeypatch)
    assert events == [f"helper {FALLBACK_HELPER_IMAGE}", "opened"]
    events, _ = _open(monkeypatch, read_only=True, with_database=True)
    assert events == [f"helper {FALLBACK_HELPER_IMAGE}", "opened"]


def test_deploy_opens_its_environment_with_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    @contextlib.contextmanager
    def open_environment(ctx: object, environment: str, **options: object) -> Iterator[None]:
        seen.update(options)
        raise DeployError("stop here")
        yield

    monkeypatch.setattr(deploy_step, "open_environment", open_environment)
    ctx = StepContext(config=load_config(REPO_ROOT / "deploy.toml"))
    with pytest.raises(DeployError, match="stop here"):
        deploy_step.run(ctx, environment="staging", image="x")
    assert seen == {"with_database": True}


def _record(previous_image: str | None) -> ReleaseRecord:
    return ReleaseRecord(
        id="1",
        environment="production",
        kind="deploy",
        who="t",
        started="2026-01-01T00:00:00Z",
        image="ghcr.io/x:1",
        image_id="sha256:new",
        previous_image=previous_image,
    )


def _session() -> Any:
    return SimpleNamespace(history=EnvironmentStore(MemoryStore(), "production"))  # type: ignore[arg-type]


def test_a_failed_pre_deploy_backup_on_a_new_environment_says_no_app_ran() -> None:
    session, record = _session(), _record(None)
    error = CheckFailed("the backup of environment production failed: test restore")
    deploy_step._fail_before_anything_changed(session, record, error)
    assert "app is down" not in (error.untouched or "")
    assert "no app ran in production before this deploy, and none was started" in (
        error.untouched or ""
    )
    assert error.message.startswith("deploy of ghcr.io/x:1 to production failed: ")
    [saved] = session.history.releases()
    assert saved.outcome == "failed" and saved.error == error.message.split(" failed: ", 1)[1]


def test_a_failed_pre_deploy_backup_leaves_the_running_release_serving() -> None:
    session, record = _session(), _record("ghcr.io/x:0")
    error = CheckFailed("the backup failed", untouched="no backup was kept")
    deploy_step._fail_before_anything_changed(session, record, error)
    assert error.untouched == (
        "no backup was kept; nothing was deployed; the running release (ghcr.io/x:0) was not "
        "stopped and still serves"
    )


def test_a_backup_failure_is_not_rolled_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """_deploy with a backup that fails: the strategy never runs, nor a rollback."""
    calls: list[str] = []
    session = _session()
    session.target = SimpleNamespace(name="production")
    session.ctx = SimpleNamespace(
        config=SimpleNamespace(deploy=SimpleNamespace(health_timeout_s=1))
    )
    session.progress = lambda m: None
    session.refresh_lock = lambda: None
    monkeypatch.setattr(deploy_step, "running_app", lambda target: None)
    monkeypatch.setattr(deploy_step, "ensure_database", lambda s: None)
    monkeypatch.setattr(deploy_step.proxy, "ensure_running", lambda *a, **k: None)
    monkeypatch.setattr(
        deploy_step.Database, "of", lambda target: SimpleNamespace(revision=lambda: None)
    )

    def failing_backup(*args: object) -> None:
        raise CheckFailed("the backup of environment production failed: pg_restore")

    monkeypatch.setattr(deploy_step.backup_step, "ensure_pre_deploy", failing_backup)
    monkeypatch.setattr(deploy_step, "_roll_back_unhealthy", lambda *a: calls.append("rollback"))

    class Replacer:
        name = "recreate"

        def replace(self, *args: object) -> None:
            calls.append("replace")

    info = SimpleNamespace(ref="ghcr.io/x:1", id="sha256:new", version="1", expand_only=False)
    with pytest.raises(CheckFailed) as failed:
        deploy_step._deploy(session, info, Replacer(), no_backup_check=False)  # type: ignore[arg-type]
    assert calls == []
    assert "no app ran in production" in (failed.value.untouched or "")
    [record] = session.history.releases()
    assert record.outcome == "failed" and set(record.timings) == {"backup"}


def test_an_unhealthy_first_release_does_not_say_the_app_is_down() -> None:
    session, record = _session(), _record(None)
    session.target = None
    error = CheckFailed("app did not become healthy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            deploy_step.Database, "of", lambda target: SimpleNamespace(revision=lambda: "0001")
        )
        deploy_step._roll_back_unhealthy(session, record, error)
    assert "app is down" not in (error.untouched or "")
    assert "no earlier release to roll back to" in (error.untouched or "")


def test_a_helper_without_pg_restore_is_not_a_verdict_on_the_backup() -> None:
    result = SimpleNamespace(exit_code=126, error_line=lambda: "executable file not found")
    store = SimpleNamespace(
        run=lambda argv: result, container=SimpleNamespace(image_id="sha256:debian")
    )
    session: Any = SimpleNamespace(store=store)
    with pytest.raises(ExternalCommandFailed) as failed:
        backup_step._list_archive(session, "/store/x.dump")
    assert not isinstance(failed.value, CheckFailed)
    assert "pg_restore cannot run in the backup store's helper" in failed.value.message
