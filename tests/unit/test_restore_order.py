"""The order of a restore and of a rollback with a restore: the backup goes into a scratch
database, takes the service database's name, the app serves it, and only then is the verified
safety backup taken from the replaced database (kept under its own name); that database is
dropped only after its safety backup verified, and kept (with a warning) when it failed.

The database, the store and the engine are faked here: these tests record the calls in order.
The integration tests (tests/integration/test_backup.py, test_rollback.py) run the real thing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.commands import postgres as pg
from deploytools.errors import CheckFailed, DeployError
from deploytools.steps import app_service, rollback
from deploytools.steps import backup as backup_step
from deploytools.store.records import BackupManifest, ReleaseRecord

NAME = "rbac"


class FakeDatabase:
    """Records renames and drops; answers counts and revisions."""

    def __init__(self, events: list[tuple[str, ...]]) -> None:
        self.name = NAME
        self.events = events

    def row_counts(self, **_: Any) -> dict[str, int]:
        return {"users": 5}

    def revision(self, **_: Any) -> str:
        return "0002"

    def replace_with(self, scratch: str, *, keep_as: str) -> None:
        self.events.append(("swap", scratch, keep_as))

    def drop_database(self, name: str) -> None:
        self.events.append(("drop", name))

    def create_database(self, name: str) -> None:
        self.events.append(("create", name))


class FakeContainer:
    def __init__(self, events: list[tuple[str, ...]]) -> None:
        self.events = events

    def stop(self, timeout_s: float) -> None:
        self.events.append(("app stop",))

    def start(self) -> None:
        self.events.append(("app start",))


def fake_platform(events: list[tuple[str, ...]]) -> SimpleNamespace:
    """A platform whose app is paused as Target.paused does it: its containers stopped,
    then the very same started again."""

    @contextlib.contextmanager
    def paused(service: str, *, what: str) -> Iterator[None]:
        container = FakeContainer(events)
        container.stop(timeout_s=10)
        try:
            yield
        finally:
            container.start()

    return SimpleNamespace(name="prod", paused=paused)


def _manifest() -> BackupManifest:
    return BackupManifest(
        id="b-1",
        environment="prod",
        created="2026-12-01T00:00:00Z",
        database=NAME,
        release="r-1",
        image="app:1",
        version="1",
        revision="0001",
        size=1,
        sha256="x",
        pg_dump_version="16",
        row_counts={"users": 3},
        file="/store/b-1.dump",
    )


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    events: list[tuple[str, ...]] = []
    db = FakeDatabase(events)
    progress: list[str] = []
    session: Any = SimpleNamespace(
        history=SimpleNamespace(manifest=lambda backup_id: _manifest()),
        platform=fake_platform(events),
        ctx=SimpleNamespace(config=SimpleNamespace(project=SimpleNamespace(app_service="app"))),
        progress=progress.append,
        refresh_lock=lambda: None,
    )
    monkeypatch.setattr(backup_step.Database, "of", staticmethod(lambda target: db))
    for name in ("_check_file", "_check_listing", "verify_volumes"):
        monkeypatch.setattr(backup_step, name, lambda *a, **k: None)
    monkeypatch.setattr(
        backup_step, "current_origin", lambda s: backup_step.Origin("r-2", "app:2", "2")
    )
    monkeypatch.setattr(
        backup_step,
        "_restore_scratch",
        lambda s, d, m, scratch: events.append(("restore into", scratch)),
    )
    monkeypatch.setattr(backup_step, "restore_volumes", lambda s, m: events.append(("volumes",)))
    world = SimpleNamespace(events=events, session=session, progress=progress, fail=None)

    def create_in(session: Any, **kwargs: Any) -> Any:
        events.append(("safety backup", kwargs["source"]))
        assert kwargs["verify"] is True
        assert kwargs["origin"] == backup_step.Origin("r-2", "app:2", "2")
        if world.fail is not None:
            raise world.fail
        return SimpleNamespace(id="b-2")

    monkeypatch.setattr(backup_step, "create_in", create_in)
    return world


def _kept(events: list[tuple[str, ...]]) -> str:
    swap = next(e for e in events if e[0] == "swap")
    return swap[2]


def test_a_restore_swaps_serves_then_backs_up_the_replaced_database_then_drops_it(
    world: SimpleNamespace,
) -> None:
    result = backup_step.restore_in(world.session, "b-1", restart_app=True)
    kept = _kept(world.events)
    assert kept.startswith(NAME + backup_step.SAFETY_KEPT)
    scratch = world.events[0][1]
    assert world.events == [
        ("restore into", scratch),
        ("app stop",),
        ("swap", scratch, kept),
        ("volumes",),
        ("app start",),
        ("safety backup", kept),
        ("drop", kept),
    ]
    assert result.safety_backup_id == "b-2"
    assert result.kept_database is None
    assert result.safety_error is None


def test_a_failed_safety_backup_keeps_the_replaced_database_and_says_where(
    world: SimpleNamespace,
) -> None:
    world.fail = CheckFailed("the test restore failed: boom")
    result = backup_step.restore_in(world.session, "b-1", restart_app=True)
    kept = _kept(world.events)
    assert ("drop", kept) not in world.events
    assert world.events[-1] == ("safety backup", kept)
    assert result.kept_database == kept
    assert result.safety_backup_id is None
    assert result.safety_error is not None
    assert f"kept in database {kept}" in result.safety_error
    assert f"backup secure --env prod {kept}" in result.safety_error
    assert any(line.startswith("warning: ") and kept in line for line in world.progress)


def test_a_failed_scratch_restore_touches_nothing(
    world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise CheckFailed("other row counts")

    monkeypatch.setattr(backup_step, "_restore_scratch", broken)
    with pytest.raises(CheckFailed):
        backup_step.restore_in(world.session, "b-1", restart_app=True)
    assert [e[0] for e in world.events] == ["drop"]  # the scratch database only
    assert world.events[0][1].startswith(NAME + "__dtrestore_")


def test_unsecured_restore_leaves_the_backup_to_the_caller(world: SimpleNamespace) -> None:
    result = backup_step.restore_in(world.session, "b-1", restart_app=False, secure=False)
    kept = _kept(world.events)
    assert result.kept_database == kept
    assert not any(e[0] in ("safety backup", "drop") for e in world.events)


def test_scratch_cleanup_never_matches_a_kept_database() -> None:
    kept = NAME + backup_step.SAFETY_KEPT + "a1b2c3"
    verify_prefix = NAME + backup_step.VERIFY_SCRATCH
    assert not kept.startswith(verify_prefix)
    # A literal prefix (starts_with), not LIKE, where "_" would match any character.
    sql = pg.unused_databases_sql(verify_prefix)
    assert "starts_with(datname, 'rbac__dtverify_')" in sql
    assert " LIKE " not in sql.upper()
    assert "starts_with(datname, 'rbac__dtsafety_')" in pg.databases_named_sql(
        NAME + backup_step.SAFETY_KEPT
    )


# -- rollback ---------------------------------------------------------------------------------


class FakePhases:
    def __init__(self, events: list[tuple[str, ...]], record: ReleaseRecord) -> None:
        self.events, self.record = events, record

    def phase(self, name: str, *, save: bool = True) -> Any:
        import contextlib

        events = self.events

        @contextlib.contextmanager
        def timed() -> Any:
            events.append(("phase", name))
            yield

        return timed()


def _rollback_world(
    monkeypatch: pytest.MonkeyPatch, *, secured: backup_step.RestoreResult | Exception
) -> SimpleNamespace:
    events: list[tuple[str, ...]] = []
    saved: list[ReleaseRecord] = []
    current = ReleaseRecord(
        id="r-2",
        environment="prod",
        kind="deploy",
        who="me",
        started="t",
        image="app:2",
        outcome="succeeded",
        backup_id="b-1",
        revision_before="0001",
    )
    history = SimpleNamespace(
        releases_and_next_id=lambda: ([current], "r-3"),
        manifest=lambda backup_id: _manifest(),
        save_release=lambda record: saved.append(record),
    )
    session: Any = SimpleNamespace(
        history=history,
        target=SimpleNamespace(name="prod"),
        platform=SimpleNamespace(name="prod"),
        progress=lambda message: events.append(("progress", message)),
    )
    target = rollback.RollbackTarget("app:1", "sha:1", "1", "r-1")
    monkeypatch.setattr(rollback, "_choose", lambda *a: (target, [current]))
    monkeypatch.setattr(rollback.Database, "of", staticmethod(lambda t: FakeDatabase(events)))
    monkeypatch.setattr(
        rollback.backup_step, "current_origin", lambda s: backup_step.Origin("r-2", "app:2", "2")
    )
    monkeypatch.setattr(rollback.app_service, "Phases", lambda s, r: FakePhases(events, r))
    monkeypatch.setattr(app_service, "stop_app", lambda s: events.append(("app stop",)))
    monkeypatch.setattr(app_service, "start_app", lambda s, image: events.append(("app start",)))
    monkeypatch.setattr(app_service, "wait_app_healthy", lambda s: events.append(("healthy",)))
    kept = NAME + backup_step.SAFETY_KEPT + "abcdef"
    restored = backup_step.RestoreResult(
        environment="prod",
        backup_id="b-1",
        safety_backup_id=None,
        rows_dropped=2,
        table_differences={"users": 2},
        revision_before="0002",
        revision_after="0001",
        kept_database=kept,
    )

    prepared = backup_step.PreparedRestore(
        manifest=_manifest(),
        scratch=NAME + "__dtrestore_abcdef",
        origin=backup_step.Origin("r-2", "app:2", "2"),
        rows_dropped=2,
        table_differences={"users": 2},
        revision_before="0002",
    )

    def prepare_restore(s: Any, backup_id: str, *, current_counts: Any) -> Any:
        assert current_counts == {"users": 5}  # counted once, for the message
        events.append(("restore into scratch", backup_id))
        return prepared

    def swap_in(s: Any, p: Any, *, restart_app: bool) -> Any:
        assert p is prepared and restart_app is False
        events.append(("swap", p.scratch))
        return restored

    def discard(s: Any, p: Any) -> None:
        events.append(("discard", p.scratch))

    def secure_replaced(s: Any, result: Any, *, origin: Any) -> Any:
        assert result is restored
        assert origin == backup_step.Origin("r-2", "app:2", "2")  # the release rolled back
        events.append(("safety backup", result.kept_database))
        if isinstance(secured, Exception):
            raise secured
        return secured

    monkeypatch.setattr(rollback.backup_step, "prepare_restore", prepare_restore)
    monkeypatch.setattr(rollback.backup_step, "swap_in", swap_in)
    monkeypatch.setattr(rollback.backup_step, "discard", discard)
    monkeypatch.setattr(rollback.backup_step, "secure_replaced", secure_replaced)
    return SimpleNamespace(events=events, saved=saved, session=session, kept=kept)


def _steps(events: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [e for e in events if e[0] != "progress"]


def test_a_rollback_serves_the_restored_data_before_the_safety_backup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept = NAME + backup_step.SAFETY_KEPT + "abcdef"
    done = backup_step.RestoreResult(
        environment="prod",
        backup_id="b-1",
        safety_backup_id="b-9",
        rows_dropped=2,
        table_differences={},
        revision_before="0002",
        revision_after="0001",
    )
    w = _rollback_world(monkeypatch, secured=done)
    record = rollback.roll_back_in(w.session, restore_db=True)
    assert _steps(w.events) == [
        ("phase", "restore"),
        ("restore into scratch", "b-1"),  # while the newer release still serves
        ("phase", "stop"),
        ("app stop",),
        ("phase", "swap"),
        ("swap", NAME + "__dtrestore_abcdef"),
        ("phase", "start"),
        ("app start",),
        ("phase", "healthy"),
        ("healthy",),
        ("safety backup", kept),
    ]
    assert record.outcome == "succeeded"
    assert record.restored_backup == "b-1"
    assert record.safety_backup == "b-9"
    assert record.kept_database is None
    # The record said "succeeded" before the safety backup began, and says where it went after.
    assert w.saved[-1].safety_backup == "b-9"


def test_a_rollback_whose_safety_backup_fails_still_succeeds_and_keeps_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept = NAME + backup_step.SAFETY_KEPT + "abcdef"
    failed = backup_step.RestoreResult(
        environment="prod",
        backup_id="b-1",
        safety_backup_id=None,
        rows_dropped=2,
        table_differences={},
        revision_before="0002",
        revision_after="0001",
        kept_database=kept,
        safety_error=f"the safety backup of the replaced database failed: x. The data from "
        f"before the restore is kept in database {kept}; ...",
    )
    w = _rollback_world(monkeypatch, secured=failed)
    record = rollback.roll_back_in(w.session, restore_db=True)
    assert record.outcome == "succeeded"
    assert record.kept_database == kept
    assert record.safety_backup is None
    assert any(n.startswith("warning: ") and kept in n for n in record.notes)
    assert w.saved[-1].kept_database == kept


def test_a_rollback_whose_restore_fails_takes_no_safety_backup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = _rollback_world(monkeypatch, secured=DeployError("unused"))

    def broken(*_: Any, **__: Any) -> Any:
        raise CheckFailed("other row counts")

    monkeypatch.setattr(rollback.backup_step, "prepare_restore", broken)
    with pytest.raises(CheckFailed):
        rollback.roll_back_in(w.session, restore_db=True)
    assert not any(e[0] in ("safety backup", "app stop", "swap") for e in w.events)
    assert w.saved[-1].outcome == "failed"


def test_a_rollback_that_cannot_stop_the_app_drops_the_unused_scratch_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = _rollback_world(monkeypatch, secured=DeployError("unused"))

    def stuck(*_: Any) -> None:
        raise DeployError("the app did not stop")

    monkeypatch.setattr(app_service, "stop_app", stuck)
    with pytest.raises(DeployError):
        rollback.roll_back_in(w.session, restore_db=True)
    assert _steps(w.events)[-1] == ("discard", NAME + "__dtrestore_abcdef")
    assert not any(e[0] in ("swap", "safety backup") for e in w.events)
    assert w.saved[-1].outcome == "failed" and w.saved[-1].kept_database is None


def test_a_rollback_whose_app_fails_after_the_restore_names_the_kept_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = _rollback_world(monkeypatch, secured=DeployError("unused"))

    def unhealthy(*_: Any) -> None:
        raise DeployError("the app did not become healthy")

    monkeypatch.setattr(app_service, "wait_app_healthy", unhealthy)
    with pytest.raises(DeployError) as caught:
        rollback.roll_back_in(w.session, restore_db=True)
    assert not any(e[0] == "safety backup" for e in w.events)
    assert f"kept as {w.kept}" in (caught.value.untouched or "")
    assert w.saved[-1].kept_database == w.kept


def test_a_failed_swap_drops_the_scratch_database_and_starts_the_app_again(
    world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(self: Any, scratch: str, *, keep_as: str) -> None:
        world.events.append(("swap refused", scratch))
        raise DeployError("database is being accessed by other users")

    monkeypatch.setattr(FakeDatabase, "replace_with", refused)
    with pytest.raises(DeployError):
        backup_step.restore_in(world.session, "b-1", restart_app=True)
    scratch = world.events[0][1]
    assert world.events == [
        ("restore into", scratch),
        ("app stop",),
        ("swap refused", scratch),
        ("drop", scratch),
        ("app start",),
    ]


def test_a_safety_backup_never_counts_as_a_backup_of_what_serves() -> None:
    safety = _manifest()
    safety = BackupManifest(**{**safety.__dict__, "id": "b-2", "reason": "pre-restore of b-1"})
    plain = BackupManifest(**{**_manifest().__dict__, "reason": "pre-deploy"})
    session: Any = SimpleNamespace(
        history=SimpleNamespace(
            manifests=lambda: [plain, safety],
            verification=lambda backup_id: SimpleNamespace(ok=True),
        )
    )
    assert backup_step.latest_verified(session) is plain
    assert backup_step.latest_verified(session, since="2026-12-01T00:00:00Z") is plain
