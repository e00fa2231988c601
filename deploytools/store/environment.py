"""One environment's state in the store: its backup index, release records and deploy lock."""

from __future__ import annotations

from deploytools.store.backups import BackupIndex
from deploytools.store.files import BackupStore
from deploytools.store.locks import DeployLock
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
