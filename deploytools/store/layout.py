"""Where one environment's state lives in the store (see deploytools/store/__init__.py)."""

from __future__ import annotations

from deploytools.store.files import BackupStore


class EnvironmentFiles:
    """One environment's directory in an open store, and the paths of what it keeps."""

    def __init__(self, store: BackupStore, environment: str) -> None:
        self.store = store
        self.environment = environment

    def backup_file(self, backup_id: str) -> str:
        return f"{self.environment}/backups/{backup_id}.dump"

    def _manifest_file(self, backup_id: str) -> str:
        return f"{self.environment}/backups/{backup_id}.json"

    def _verification_file(self, backup_id: str) -> str:
        return f"{self.environment}/backups/{backup_id}.verified.json"

    @property
    def _lock_file(self) -> str:
        return f"{self.environment}/lock.json"
