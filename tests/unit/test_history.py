"""Release records, the backup index, the lock, retention and the rollback rule, over an
in-memory store (the real one is exercised in tests/integration/test_backup.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket

import pytest

from deploytools.errors import LockHeld, UsageError
from deploytools.steps import backup as backup_step
from deploytools.steps.rollback import restore_needed
from deploytools.store.environment import EnvironmentStore
from deploytools.store.records import BackupManifest, Verification
from tests.fakes.memory_store import MemoryStore
from tests.helpers.records import record


def history() -> EnvironmentStore:
    return EnvironmentStore(MemoryStore(), "prod")  # type: ignore[arg-type]


def manifest(id: str, created: str) -> BackupManifest:
    return BackupManifest(
        id=id,
        environment="prod",
        created=created,
        database="rbac",
        release=None,
        image=None,
        version=None,
        revision="0001",
        size=1,
        sha256="0" * 64,
        pg_dump_version="15",
        row_counts={"public.t": 1},
        file="f",
    )


def test_release_ids_count_up_and_the_current_release_is_the_newest_serving() -> None:
    h = history()
    assert h.next_release_id() == "0001"
    h.save_release(record("0001"))
    h.save_release(record("0002", outcome="failed"))
    h.save_release(record("0003", kind="migrate"))
    assert h.next_release_id() == "0004"
    current = h.current_release()
    assert current is not None and current.id == "0001"


def test_a_held_lock_refuses_a_second_holder_naming_the_first() -> None:
    h = history()
    lock = h.acquire("deploy", ttl_s=600)
    with pytest.raises(LockHeld) as caught:
        h.acquire("deploy", ttl_s=600)
    assert lock.holder in caught.value.message and lock.since in caught.value.message
    assert caught.value.exit_code == 4
    h.release(lock)
    assert h.lock() is None


def test_releasing_a_lock_taken_over_by_another_holder_leaves_theirs() -> None:
    h = history()
    mine = h.acquire("deploy", ttl_s=600)
    h.break_lock(force=True)
    theirs = h.acquire("rollback", ttl_s=600)
    h.release(mine)
    assert h.lock() == theirs
    h.release(theirs)
    assert h.lock() is None


def test_locked_releases_on_failure() -> None:
    h = history()
    with pytest.raises(RuntimeError), h.locked("deploy", ttl_s=600):
        raise RuntimeError("boom")
    assert h.lock() is None


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over() -> None:
    h = history()
    lock = h.acquire("deploy", ttl_s=600)
    dead = dataclasses.replace(lock, pid=2**22 + 12345, host=socket.gethostname())
    h.store.write("prod/lock.json", json.dumps(dataclasses.asdict(dead)).encode())
    mine = h.acquire("deploy", ttl_s=600)
    assert mine.pid == os.getpid()


def test_break_refuses_a_fresh_lock_and_accepts_an_expired_one() -> None:
    h = history()
    lock = h.acquire("deploy", ttl_s=600)
    with pytest.raises(LockHeld):
        h.break_lock()
    old = dataclasses.replace(lock, refreshed="2000-01-01T00:00:00Z", host="elsewhere")
    h.store.write("prod/lock.json", json.dumps(dataclasses.asdict(old)).encode())
    broken = h.break_lock()
    assert broken is not None and broken.token == lock.token
    assert h.lock() is None


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def read(self, path: str) -> bytes | None:
        self.calls += 1
        return super().read(path)

    def write(self, path: str, data: bytes) -> None:
        self.calls += 1
        super().write(path, data)


def test_a_refresh_writes_only_once_a_tenth_of_the_ttl_has_passed() -> None:
    store = CountingStore()
    h = EnvironmentStore(store, "prod")  # type: ignore[arg-type]
    lock = h.acquire("deploy", ttl_s=600)
    store.calls = 0
    assert h.refresh(lock) is lock  # fresh: nothing asked of the store
    assert store.calls == 0
    stale = dataclasses.replace(lock, refreshed="2000-01-01T00:00:00Z")
    fresh = h.refresh(stale)
    assert fresh.refreshed != stale.refreshed and store.calls == 2  # read, then write
    assert h.lock() == fresh


def test_unknown_backup_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no backup nope"):
        history().manifest("nope")


class FakeSession:
    def __init__(self, h: EnvironmentStore) -> None:
        self.history = h

    def progress(self, message: str) -> None:
        pass


def test_retention_keeps_newest_verified_newer_unverified_and_the_pinned_one() -> None:
    h = history()
    for i in range(1, 6):
        h.save_manifest(manifest(f"b{i}", f"2026-01-0{i}T00:00:00Z"))
    for i in (1, 2, 3, 4):
        h.save_verification(Verification(f"b{i}", "t", True, True, True, True, True, "ok"))
    h.save_release(record("0001", backup_id="b1"))
    deleted = backup_step.prune_in(FakeSession(h), keep=2)  # type: ignore[arg-type]
    # b5 (unverified, newest) and b4, b3 (newest verified) stay; b1 is pinned; b2 goes.
    assert deleted == ["b2"]
    assert [m.id for m in h.manifests()] == ["b1", "b3", "b4", "b5"]


def test_rows_dropped_counts_differences_both_ways() -> None:
    current = {"a": 10, "b": 3, "c": 1}
    backup = {"a": 8, "b": 5}
    assert backup_step.table_differences(current, backup) == {"a": 2, "b": -2, "c": 1}
    assert backup_step.rows_dropped(current, backup) == 5


def test_rollback_restores_only_when_asked_or_declared_not_expand_only() -> None:
    undeclared = [record("0002", expand_only=None)]
    contracting = [record("0002", expand_only=False)]
    expanding = [record("0002", expand_only=True)]
    assert restore_needed(restore_db=True, revision_changed=False, newer=expanding)
    assert restore_needed(restore_db=False, revision_changed=True, newer=contracting)
    assert not restore_needed(restore_db=False, revision_changed=False, newer=contracting)
    assert not restore_needed(restore_db=False, revision_changed=True, newer=undeclared)
    assert not restore_needed(restore_db=False, revision_changed=True, newer=expanding)


def test_lock_wait_takes_the_lock_once_the_holder_releases_it() -> None:
    import threading

    h = history()
    first = h.acquire("deploy", ttl_s=600)
    releaser = threading.Timer(0.3, h.release, args=(first,))
    releaser.start()
    try:
        second = h.acquire("deploy", ttl_s=600, wait_s=30)
    finally:
        releaser.join()
    assert second.token != first.token
    held = h.lock()
    assert held is not None and held.token == second.token
