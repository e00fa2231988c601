"""The records kept in the state store, as frozen (or plain) dataclasses that read and write
as JSON: a backup's manifest and its verification, a release record, the deploy lock's holder.

They are plain data; where each lives in the store is said in deploytools/store/__init__.py.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")


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


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
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
    #: The verified safety backup of the database a restore replaced (taken once the rolled
    #: back release serves).
    safety_backup: str | None = None
    #: The replaced database, kept under this name because its safety backup failed (None
    #: once that backup verified and it was dropped).
    kept_database: str | None = None
    #: Why this change went ahead outside the environment's deploy windows (see deploy_windows.py).
    outside_window: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: When each phase of `timings` ended (UTC): the store keeps keys sorted, so the phases'
    #: order is read from these, not from the order of `timings`.
    phase_ends: dict[str, str] = field(default_factory=dict)
    #: The last lines of a failed command's output (the migration's), masked: what the
    #: incident report shows as the logs around the failure.
    failure_output: list[str] = field(default_factory=list)
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


def dump(obj: Any) -> bytes:
    """A record as the JSON the store keeps."""
    return json.dumps(dataclasses.asdict(obj), indent=2, sort_keys=True).encode() + b"\n"
