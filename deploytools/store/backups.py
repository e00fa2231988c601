"""The backup index of an environment: manifests, verifications, and removing a backup."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

from deploytools.errors import UsageError
from deploytools.store.layout import EnvironmentFiles
from deploytools.store.records import BackupManifest, Verification, dump, from_dict


class BackupIndex(EnvironmentFiles):
    """The backups of one environment in an open store."""

    # -- backups -------------------------------------------------------------------------------
    def new_backup_id(self) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.environment}-{stamp}-{secrets.token_hex(2)}"

    def save_manifest(self, manifest: BackupManifest) -> None:
        self.store.write(self._manifest_file(manifest.id), dump(manifest))

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
        return from_dict(BackupManifest, json.loads(raw))

    def manifests(self) -> list[BackupManifest]:
        """Complete backups (those with a manifest), oldest first."""
        files = self.store.read_all(f"{self.environment}/backups", ".json")
        return [
            from_dict(BackupManifest, json.loads(raw))
            for name, raw in sorted(files.items())
            if not name.endswith(".verified.json")
        ]

    def save_verification(self, verification: Verification) -> None:
        self.store.write(self._verification_file(verification.backup_id), dump(verification))

    def verification(self, backup_id: str) -> Verification | None:
        raw = self.store.read(self._verification_file(backup_id))
        return None if raw is None else from_dict(Verification, json.loads(raw))

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
