"""The store's kept helper (store/helper.py, files.open_store with keep_s) over a fake engine:
which running helper a command reuses, when it starts its own, that it holds a lease for its
whole run and leaves the helper running, and that a command's own helper is still removed.
The helper's own script runs on the real engine in tests/integration/test_store_helper_kept.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from deploytools.engine.client import Mount, OneOff
from deploytools.engine.errors import EngineAPIError
from deploytools.engine.exec import ExecResult
from deploytools.errors import EnvironmentUnreachable, ExternalCommandFailed, LockHeld
from deploytools.store import helper
from deploytools.store.environment import EnvironmentStore
from deploytools.store.files import BackupStore, open_store
from deploytools.store.records import dump
from tests.fakes.memory_store import MemoryStore
from tests.helpers.records import record

STORE = "volume:prod-store"
IMAGE = "sha256:db"


class FakeSession:
    """An attached exec: the frames it answers, and whether it was closed."""

    def __init__(self, frames: Sequence[tuple[int, bytes]]) -> None:
        self.frames = list(frames)
        self.closed = False

    def read_frame(self, *, timeout_s: float) -> tuple[int, bytes] | None:
        return self.frames.pop(0) if self.frames else None

    def close(self) -> None:
        self.closed = True


class FakeContainer:
    def __init__(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        image: str = IMAGE,
        mounts: list[dict[str, str]] | None = None,
        started: str = "2026-12-07T03:00:00Z",
        lease: Sequence[tuple[int, bytes]] | None = ((1, b"held\n"),),
    ) -> None:
        self.id = self.name = name
        self.labels = helper.kept_labels(STORE, image) if labels is None else labels
        default_mount = [{"Type": "volume", "Name": "prod-store", "Destination": "/store"}]
        self.attrs: dict[str, Any] = {
            "Config": {"Image": image},
            "Mounts": default_mount if mounts is None else mounts,
            "State": {"StartedAt": started},
        }
        self.lease = lease  # None: the engine refuses the exec (the container stopped)
        self.sessions: list[FakeSession] = []
        self.removed = False
        self.execs: list[list[str]] = []

    def exec_attached(self, argv: Sequence[str]) -> FakeSession:
        if self.lease is None:
            raise ExternalCommandFailed(f"running sh in container {self.name} failed: not running")
        self.sessions.append(FakeSession(self.lease))
        return self.sessions[-1]

    def remove(self, *, force: bool = False, volumes: bool = False) -> None:
        self.removed = True


class FakeEngine:
    def __init__(self, running: list[FakeContainer] | None = None) -> None:
        self.running = list(running or [])
        self.started: list[OneOff] = []
        self.asked_labels: list[Sequence[str]] = []
        self.volumes = {"prod-store"}

    def containers(self, *, labels: Sequence[str] = (), all: bool = True) -> list[FakeContainer]:
        self.asked_labels.append(labels)
        wanted = dict(label.split("=", 1) for label in labels)
        return [c for c in self.running if all or wanted.items() <= c.labels.items()]

    def run(self, spec: OneOff) -> FakeContainer:
        self.started.append(spec)
        container = FakeContainer(spec.name, labels=dict(spec.labels))
        self.running.append(container)
        return container

    def volume_exists(self, name: str) -> bool:
        return name in self.volumes

    def create_volume(self, name: str, *, labels: dict[str, str]) -> None:
        self.volumes.add(name)


def opened(engine: FakeEngine, **options: Any) -> Any:
    with open_store(engine, STORE, image=IMAGE, name_prefix="prod", **options) as store:  # type: ignore[arg-type]
        return store.container


def test_a_running_kept_helper_of_the_store_is_reused_and_left_running() -> None:
    kept = FakeContainer("prod-store-kept")
    engine = FakeEngine([kept])
    assert opened(engine, keep_s=3600) is kept
    assert engine.started == [] and not kept.removed
    # Held for the whole command, released at its end (the helper may then idle out).
    assert len(kept.sessions) == 1 and kept.sessions[0].closed
    assert sorted(engine.asked_labels[0]) == sorted(
        [
            "deploytools.role=backup-store-helper",
            f"deploytools.store-helper={helper.CONTRACT}",
            f"deploytools.store={STORE}",
            f"deploytools.store-image={IMAGE}",
        ]
    )


def test_without_one_a_kept_helper_is_started_held_and_left_running() -> None:
    engine = FakeEngine()
    container = opened(engine, keep_s=3600)
    (spec,) = engine.started
    assert spec.auto_remove and spec.network_mode == "none" and spec.user == "0"
    assert spec.labels == helper.kept_labels(STORE, IMAGE)
    assert spec.entrypoint == ["sh", "-c", helper.IDLE_SCRIPT, "sh", "3600", str(helper.POLL_S)]
    assert spec.mounts == [Mount("/store", "prod-store", kind="volume")]
    assert not container.removed and container.sessions[0].closed


@pytest.mark.parametrize(
    ("case", "stale"),
    [
        ("another image (the database was upgraded)", FakeContainer("h", image="sha256:old-db")),
        (
            "another store mounted under the labels",
            FakeContainer(
                "h", mounts=[{"Type": "volume", "Name": "other", "Destination": "/store"}]
            ),
        ),
        (
            "a store path changed in deploy.toml",
            FakeContainer("h", labels=helper.kept_labels("dir:/srv/backups", IMAGE)),
        ),
        (
            "an older deploytools' helper (no contract)",
            FakeContainer("h", labels={"deploytools.role": "backup-store-helper"}),
        ),
        (
            "a newer contract",
            FakeContainer("h", labels={**helper.kept_labels(STORE, IMAGE), helper.KEPT_LABEL: "9"}),
        ),
        ("a helper that died (the exec is refused)", FakeContainer("h", lease=None)),
        ("a helper about to exit (the lease is refused)", FakeContainer("h", lease=())),
    ],
)
def test_a_helper_that_does_not_fit_is_not_reused(case: str, stale: FakeContainer) -> None:
    engine = FakeEngine([stale])
    container = opened(engine, keep_s=3600)
    assert container is not stale and len(engine.started) == 1, case
    assert not stale.removed  # not ours to remove: it goes away by itself
    assert all(s.closed for s in stale.sessions)


def test_the_newest_of_several_is_leased_first() -> None:
    old = FakeContainer("old", started="2026-12-07T01:00:00Z")
    new = FakeContainer("new", started="2026-12-07T02:00:00Z")
    assert opened(FakeEngine([old, new]), keep_s=3600) is new
    assert old.sessions == []


def test_a_helper_started_kept_that_cannot_be_held_is_removed_and_the_store_unreachable() -> None:
    class Dying(FakeEngine):
        def run(self, spec: OneOff) -> FakeContainer:
            container = super().run(spec)
            container.lease = ()
            return container

    engine = Dying()
    with pytest.raises(EnvironmentUnreachable, match="stopped as soon as it started"):
        opened(engine, keep_s=3600)
    assert engine.running[0].removed


def test_a_commands_own_helper_is_still_removed_on_the_way_out() -> None:
    kept = FakeContainer("prod-store-kept")
    engine = FakeEngine([kept])
    container = opened(engine, keep_s=0)
    assert container is not kept and container.removed
    assert engine.started[0].entrypoint[0] == "sleep"
    assert engine.asked_labels == []  # keep_s 0 never looks for a kept one


def test_a_read_only_open_reuses_a_kept_helper_but_never_starts_one() -> None:
    kept = FakeContainer("prod-store-kept")
    assert opened(FakeEngine([kept]), keep_s=3600, create=False) is kept
    engine = FakeEngine()
    engine.volumes.clear()
    container = opened(engine, keep_s=3600, create=False)
    assert container.removed and engine.started[0].entrypoint[0] == "sleep"
    assert not engine.started[0].mounts and engine.volumes == set()


def test_a_refused_start_is_the_store_unreachable() -> None:
    class Refusing(FakeEngine):
        def run(self, spec: OneOff) -> FakeContainer:
            raise EngineAPIError("no such image")

    with pytest.raises(EnvironmentUnreachable, match="cannot open the backup store"):
        opened(Refusing(), keep_s=3600)


def test_a_dir_store_is_matched_by_its_bind_mount() -> None:
    mounts = [{"Type": "bind", "Source": "/srv/backups", "Destination": "/store"}]
    container: Any = FakeContainer("h", mounts=mounts)
    assert helper.mounts_store(container, Mount("/store", "/srv/backups", kind="bind"))
    assert not helper.mounts_store(container, Mount("/store", "/srv/other", kind="bind"))
    assert not helper.mounts_store(container, Mount("/store", "/srv/backups", kind="volume"))


class ExecRecorder:
    """A helper container that records each exec's argv and answers with `codes` in turn."""

    def __init__(self, *codes: int) -> None:
        self.argvs: list[list[str]] = []
        self.codes = list(codes)

    def exec(self, argv: Sequence[str], **_: Any) -> Any:
        self.argvs.append(list(argv))
        code = self.codes.pop(0) if self.codes else 0
        return ExecResult(exit_code=code, stdout=b"", stderr=b"mkdir: denied" if code else b"")


def test_directories_left_to_the_next_script_cost_no_exec_of_their_own() -> None:
    container = ExecRecorder()
    store = BackupStore(container, STORE)  # type: ignore[arg-type]
    store.ensure_dir("prod/releases", "prod/backups", with_next=True)
    assert container.argvs == []
    assert store.read("prod/lock.json") is not None
    (argv,) = container.argvs
    assert argv[2].startswith(
        "umask 077; mkdir -p -- /store/prod/releases /store/prod/backups && chmod 0700 "
    )
    store.read("prod/lock.json")
    assert "mkdir" not in container.argvs[1][2]  # made once
    store.ensure_dir("prod/pipelines", with_next=True)
    store.run(["pg_restore", "--version"])  # not a script: the directories go first, alone
    assert "mkdir -p -- /store/prod/pipelines" in container.argvs[2][2]
    assert container.argvs[3] == ["pg_restore", "--version"]


def test_directories_that_cannot_be_made_fail_the_script_that_carried_them() -> None:
    store = BackupStore(ExecRecorder(97), STORE)  # type: ignore[arg-type]
    store.ensure_dir("prod/releases", with_next=True)
    with pytest.raises(ExternalCommandFailed, match="creating /store/prod/releases failed"):
        store.exists("prod/lock.json")


def test_a_rollbacks_lock_and_its_records_are_one_look_at_the_store() -> None:
    memory = MemoryStore()
    history = EnvironmentStore(memory, "prod")  # type: ignore[arg-type]
    for n in ("0001", "0002"):
        memory.write(f"prod/releases/{n}.json", dump(record(id=n)))
    memory.write("prod/releases/0003.checks-lock", b"{}")
    with history.locked_with_releases("rollback", ttl_s=60) as (lock, records, next_id):
        assert lock.operation == "rollback" and "prod/lock.json" in memory.files
        assert [r.id for r in records] == ["0001", "0002"] and next_id == "0003"
        with pytest.raises(LockHeld), history.locked_with_releases("rollback", ttl_s=60):
            pass
    assert "prod/lock.json" not in memory.files
