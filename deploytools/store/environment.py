"""One environment's state in the store: its backup index, release records and deploy lock."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from deploytools.store.backups import BackupIndex
from deploytools.store.files import BackupStore
from deploytools.store.locks import DeployLock
from deploytools.store.records import LockInfo, ReleaseRecord
from deploytools.store.releases import ReleaseLog


class EnvironmentStore(BackupIndex, ReleaseLog, DeployLock):
    """The records of one environment in an open store."""

    def __init__(self, store: BackupStore, environment: str, *, read_only: bool = False) -> None:
        """`read_only`: for commands that only read; the directories a write needs are then
        not made (a read of a missing one reads as empty)."""
        super().__init__(store, environment)
        if not read_only:
            # Made by the first script this command runs (the lock's, most often): no exec
            # of their own at every command's start.
            store.ensure_dir(f"{environment}/releases", f"{environment}/backups", with_next=True)

    @contextlib.contextmanager
    def locked_with_releases(
        self, operation: str, *, ttl_s: int, wait_s: float = 0.0
    ) -> Iterator[tuple[LockInfo, list[ReleaseRecord], str]]:
        """`locked`, with the records and the next record's id (`releases_and_next_id`) read
        in the lock's own exec: a rollback's first look at the store is one exec."""
        with self.locked_reading(
            operation, ttl_s=ttl_s, wait_s=wait_s, read=self.releases_files
        ) as (lock, files):
            records, next_id = self.parse_releases(files)
            yield lock, records, next_id
