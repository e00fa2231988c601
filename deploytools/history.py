"""An environment's memory: release records, the backup index and the deploy lock.

All of it is stored with the target, in the backup store (see backup_store.py), under a
directory per environment:

    <env>/releases/NNNN.json     one record per deploy or rollback, newest = highest number
    <env>/backups/ID.dump        pg_dump custom format, 0600
    <env>/backups/ID.json        its manifest (written after the dump is complete)
    <env>/backups/ID.verified.json  the last verification of it
    <env>/lock.json              the deploy lock, while a deploy or rollback runs
    <env>/releases/NNNN.checks-lock  while a check run adds its results to record NNNN

So every runner sees the same history, and a rollback or a database restore leaves it as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from deploytools.backup_store import BackupStore
from deploytools.errors import DeadlineExceeded, LockHeld, UsageError

T = TypeVar("T")

#: The check summaries a record keeps (the 24-hour watch runs monitor every few minutes).
CHECKS_KEPT = 50
#: How long a check run waits for another one adding its results to the same record, and after
#: how long a record's checks lock counts as abandoned (its holder was killed mid-write).
CHECKS_LOCK_WAIT_S = 30.0
CHECKS_LOCK_STALE_S = 60.0


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def who() -> str:
    """Who acts: the GitHub actor in Actions, else user@host."""
    actor = os.environ.get("GITHUB_ACTOR")
    if actor:
        return f"{actor} (GitHub Actions run {os.environ.get('GITHUB_RUN_ID', '?')})"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass from stored JSON, ignoring keys a newer deploytools may have added."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds, written beside it once the dump is complete."""

    id: str
    environment: str
    created: str
    database: str
    release: str | None  # the release record id running when it was taken
    image: str | None  # the app image running when it was taken
    version: str | None
    revision: str | None  # the Alembic revision of the database
    size: int
    sha256: str
    pg_dump_version: str
    row_counts: dict[str, int]
    file: str
    reason: str = "manual"  # manual, pre-deploy, pre-restore
    #: Volume snapshots: Compose volume name -> volume, file, size, sha256, entries (volumes.py).
    volumes: dict[str, Any] = field(default_factory=dict)
    #: Off-host copies: file, location, sha256 (at rest), content_sha256, encrypted (copies.py).
    copies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.row_counts.values())


@dataclass(frozen=True)
class Verification:
    backup_id: str
    verified: str  # when
    ok: bool
    sha256_ok: bool
    listed_ok: bool
    restore_ok: bool
    row_counts_ok: bool
    detail: str


@dataclass
class ReleaseRecord:
    """One deploy or rollback of an environment, as it went."""

    id: str
    environment: str
    kind: str  # deploy | rollback | migrate
    who: str
    started: str
    image: str
    image_id: str = ""
    version: str | None = None
    strategy: str = "recreate"
    previous: str | None = None  # the release record this one replaced
    previous_image: str | None = None
    backup_id: str | None = None
    no_backup_check: bool = False
    revision_before: str | None = None
    revision_after: str | None = None
    #: Whether this release's migrations only add (tables, nullable columns): then the release
    #: before it runs on the new schema, and a rollback needs no restore. None: not declared.
    expand_only: bool | None = None
    restored_backup: str | None = None
    #: Why this change went ahead outside the environment's deploy windows (see windows.py).
    outside_window: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    outcome: str = "in-progress"  # in-progress | succeeded | failed | rolled-back | interrupted
    finished: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    #: Why a rollback ran: "manual", "unhealthy release", "verification failed", "monitor
    #: breach: ..." (None on deploys and on rollbacks recorded before it was kept).
    reason: str | None = None
    #: The check suites run against this release while it served, oldest first: suite,
    #: environment, started, finished, verdict and each check's name, verdict, measured value,
    #: threshold and detail (steps/suite_record.py `summary`); what `report` shows without
    #: --results.
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def serving(self) -> bool:
        """Whether this record's image is what ran afterwards."""
        return self.kind in ("deploy", "rollback") and self.outcome == "succeeded"


@dataclass(frozen=True)
class LockInfo:
    environment: str
    holder: str
    host: str
    pid: int
    operation: str
    since: str
    refreshed: str
    ttl_s: int
    token: str

    def age_s(self, now: float | None = None) -> float:
        return (now if now is not None else time.time()) - parse_time(self.refreshed)

    def expired(self, now: float | None = None) -> bool:
        return self.age_s(now) > self.ttl_s

    def holder_gone(self) -> bool:
        """True when the holder ran on this host and its process no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class History:
    """The records of one environment in an open store."""

    def __init__(self, store: BackupStore, environment: str, *, read_only: bool = False) -> None:
        """`read_only`: for commands that only read; the directories a write needs are then
        not made (a read of a missing one reads as empty)."""
        self.store = store
        self.environment = environment
        if not read_only:
            store.ensure_dir(f"{environment}/releases")
            store.ensure_dir(f"{environment}/backups")

    # -- paths ---------------------------------------------------------------------------------
    def backup_file(self, backup_id: str) -> str:
        return f"{self.environment}/backups/{backup_id}.dump"

    def _manifest_file(self, backup_id: str) -> str:
        return f"{self.environment}/backups/{backup_id}.json"

    def _verification_file(self, backup_id: str) -> str:
        return f"{self.environment}/backups/{backup_id}.verified.json"

    @property
    def _lock_file(self) -> str:
        return f"{self.environment}/lock.json"

    # -- backups -------------------------------------------------------------------------------
    def new_backup_id(self) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.environment}-{stamp}-{secrets.token_hex(2)}"

    def save_manifest(self, manifest: BackupManifest) -> None:
        self.store.write(self._manifest_file(manifest.id), _dump(manifest))

    def manifest(self, backup_id: str) -> BackupManifest:
        raw = self.store.read(self._manifest_file(backup_id))
        if raw is None:
            known = ", ".join(m.id for m in self.manifests()[-5:]) or "none"
            raise UsageError(
                f"no backup {backup_id} in environment {self.environment}",
                untouched="nothing was done",
                hint=f"`deploytools backup list --env {self.environment}` (latest: {known})",
                facts={"backup_id": backup_id},
            )
        return _from_dict(BackupManifest, json.loads(raw))

    def manifests(self) -> list[BackupManifest]:
        """Complete backups (those with a manifest), oldest first."""
        files = self.store.read_all(f"{self.environment}/backups", ".json")
        return [
            _from_dict(BackupManifest, json.loads(raw))
            for name, raw in sorted(files.items())
            if not name.endswith(".verified.json")
        ]

    def save_verification(self, verification: Verification) -> None:
        self.store.write(self._verification_file(verification.backup_id), _dump(verification))

    def verification(self, backup_id: str) -> Verification | None:
        raw = self.store.read(self._verification_file(backup_id))
        return None if raw is None else _from_dict(Verification, json.loads(raw))

    def remove_backup(self, backup_id: str) -> None:
        # The manifest goes first: without it the dump is no longer offered as a backup.
        self.store.remove(self._manifest_file(backup_id))
        self.store.remove(self._verification_file(backup_id), self.backup_file(backup_id))
        # Its volume archives (volumes.py), whatever volumes the configuration names now.
        directory = f"{self.environment}/backups"
        archives = [
            f"{directory}/{name}"
            for name in self.store.list_files(directory, ".tar")
            if name.startswith(f"{backup_id}.volume-")
        ]
        if archives:
            self.store.remove(*archives)

    # -- releases ------------------------------------------------------------------------------
    def releases(self) -> list[ReleaseRecord]:
        """Every record, oldest first."""
        files = self.store.read_all(f"{self.environment}/releases", ".json")
        return [_from_dict(ReleaseRecord, json.loads(raw)) for _, raw in sorted(files.items())]

    def next_release_id(self) -> str:
        names = self.store.list_files(f"{self.environment}/releases", ".json")
        numbers = [int(n.removesuffix(".json")) for n in names if n[:-5].isdigit()]
        return f"{max(numbers, default=0) + 1:04d}"

    def save_release(self, record: ReleaseRecord) -> None:
        self.store.write(f"{self.environment}/releases/{record.id}.json", _dump(record))

    def current_release(self) -> ReleaseRecord | None:
        """The newest record whose image ended up serving."""
        serving = [r for r in self.releases() if r.serving]
        return serving[-1] if serving else None

    def attach_checks(
        self,
        summary: dict[str, Any],
        *,
        release_id: str | None = None,
        wait_s: float = CHECKS_LOCK_WAIT_S,
    ) -> ReleaseRecord | None:
        """Add a check suite's summary to release `release_id` (default: the current one) and
        return that record; None when there is no such record.

        Not under the deploy lock (checks must not wait behind a deploy), but under a lock of
        the record's own: two check runs finishing at once (verify and a scheduled monitor)
        would otherwise both read the record and the second write would drop the first's
        results. The record is written whole (the store renames a complete file into place),
        so a reader sees it before or after, never half."""
        if release_id is None:
            current = self.current_release()
            release_id = None if current is None else current.id
        if release_id is None:
            return None
        with self._checks_lock(release_id, wait_s=wait_s):
            # Read again under the lock: what another run added meanwhile is kept.
            raw = self.store.read(f"{self.environment}/releases/{release_id}.json")
            if raw is None:
                return None
            record = _from_dict(ReleaseRecord, json.loads(raw))
            record.checks = [*record.checks, summary][-CHECKS_KEPT:]
            self.save_release(record)
            return record

    @contextlib.contextmanager
    def _checks_lock(self, release_id: str, *, wait_s: float) -> Iterator[None]:
        path = f"{self.environment}/releases/{release_id}.checks-lock"
        deadline = time.monotonic() + wait_s
        mine = json.dumps({"since": time.time(), "holder": who(), "pid": os.getpid()}).encode()
        while not self.store.create_exclusive(path, mine):
            raw = self.store.read(path)
            try:
                since = float(json.loads(raw or b"{}").get("since", 0.0))
            except (ValueError, AttributeError):
                since = 0.0  # unreadable: written by a run killed mid-write
            if raw is not None and time.time() - since > CHECKS_LOCK_STALE_S:
                self.store.remove(path)
                continue
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"another check run has been adding its results to release {release_id} "
                    f"of {self.environment} for over {wait_s:.0f} s",
                    untouched=f"release {release_id}'s record (these results were not added)",
                    hint=f"rerun the check; a lock older than {CHECKS_LOCK_STALE_S:.0f} s is "
                    "taken as abandoned",
                    facts={"lock": path},
                )
            time.sleep(0.2)
        try:
            yield
        finally:
            self.store.remove(path)

    # -- the lock ------------------------------------------------------------------------------
    def lock(self) -> LockInfo | None:
        raw = self.store.read(self._lock_file)
        return None if raw is None else _from_dict(LockInfo, json.loads(raw))

    def acquire(self, operation: str, *, ttl_s: int, wait_s: float = 0.0) -> LockInfo:
        """Take the environment's lock or raise LockHeld at once (or after `wait_s`)."""
        deadline = time.monotonic() + wait_s
        delay = 0.5
        while True:
            now = utc_now()
            mine = LockInfo(
                environment=self.environment,
                holder=who(),
                host=socket.gethostname(),
                pid=os.getpid(),
                operation=operation,
                since=now,
                refreshed=now,
                ttl_s=ttl_s,
                token=secrets.token_hex(8),
            )
            if self.store.create_exclusive(self._lock_file, _dump(mine)):
                return mine
            held = self.lock()
            if held is not None and held.holder_gone():
                # Its process died on this very host (killed mid-deploy): nobody holds it.
                self.store.remove(self._lock_file)
                continue
            if time.monotonic() >= deadline:
                raise _lock_held(self.environment, held)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 5.0)

    def refresh(self, lock: LockInfo) -> LockInfo:
        """Tell others the holder is alive (a long deploy outlives the TTL otherwise).

        Only once a tenth of the TTL has passed since the last refresh: a deploy calls this at
        every phase's end, and each refresh is two execs on the target's engine, which a busy
        2-core machine answers by slowing the very requests a rolling switch is moving."""
        if lock.age_s() < lock.ttl_s / 10:
            return lock
        fresh = dataclasses.replace(lock, refreshed=utc_now())
        held = self.lock()
        if held is not None and held.token == lock.token:
            self.store.write(self._lock_file, _dump(fresh))
        return fresh

    def release(self, lock: LockInfo) -> None:
        """Remove the lock if it is still ours (its token, 16 random hex digits, is in it): one
        exec, at the end of every step, where a rolling deploy's cut-over still runs."""
        self.store.remove_if_contains(self._lock_file, lock.token)

    def break_lock(self, *, force: bool = False) -> LockInfo | None:
        """Remove a lock whose holder is gone: older than its TTL, or its process is dead
        on this host. `force` removes it regardless (the caller has checked by other means)."""
        held = self.lock()
        if held is None:
            return None
        if not (force or held.expired() or held.holder_gone()):
            raise LockHeld(
                f"the lock of environment {self.environment} was refreshed "
                f"{held.age_s():.0f} s ago by {held.holder} ({held.operation}), "
                f"within its time-to-live of {held.ttl_s} s",
                untouched="the lock was left in place",
                hint="wait until it expires, or pass --force if you know the holder is gone",
                facts=dataclasses.asdict(held),
            )
        self.store.remove(self._lock_file)
        return held

    @contextlib.contextmanager
    def locked(self, operation: str, *, ttl_s: int, wait_s: float = 0.0) -> Iterator[LockInfo]:
        """Hold the lock for the block; released on every way out, failures included."""
        lock = self.acquire(operation, ttl_s=ttl_s, wait_s=wait_s)
        try:
            yield lock
        finally:
            self.release(lock)


def _lock_held(environment: str, held: LockInfo | None) -> LockHeld:
    if held is None:
        return LockHeld(
            f"the lock of environment {environment} changed hands while we looked",
            untouched="nothing was done",
            hint="retry",
        )
    return LockHeld(
        f"another {held.operation} holds the lock of environment {environment}: "
        f"{held.holder} (pid {held.pid}) since {held.since}",
        untouched="nothing was done",
        hint=(
            "wait for it (--lock-wait SECONDS); if its holder is gone, "
            f"`deploytools lock break --env {environment}` once the lock is older than "
            f"{held.ttl_s} s"
        ),
        facts=dataclasses.asdict(held),
    )


def _dump(obj: Any) -> bytes:
    return json.dumps(dataclasses.asdict(obj), indent=2, sort_keys=True).encode() + b"\n"
