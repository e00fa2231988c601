"""Where a pipeline keeps what it did: beside the release records of the environment at the
approval gate (production), in its state store, so any runner sees the same ones:

    production/pipelines/<tag>.json         the record: each step's status, time and detail
    production/pipelines/<tag>/<step>.json  the JSON results of the checks (the report's evidence)
    production/pipelines/lock.json          the pipeline lock, held for the whole run

The pipeline lock is not the deploy lock (which the deploy, migrate and rollback steps take
themselves): it keeps other pipelines out for the whole run; the deploy lock keeps everyone out
of a deploy. Both follow the same protocol (store/locks.py: exclusive create, refresh,
time-to-live, a dead holder's lock taken over).
"""

from __future__ import annotations

import json
from typing import Any

from deploytools.errors import DeployError
from deploytools.jsonable import jsonable
from deploytools.pipeline.record import PipelineRecord
from deploytools.store.locks import DeployLock
from deploytools.store.records import LockInfo, ReleaseRecord
from deploytools.store.releases import ReleaseLog


class PipelineLock(DeployLock):
    """The deploy lock's protocol on the pipeline's own lock file."""

    @property
    def _lock_file(self) -> str:
        return f"{self.environment}/pipelines/lock.json"


class PipelineStore:
    """The pipeline records and evidence of one environment, and the pipeline lock."""

    def __init__(self, store: Any, environment: str) -> None:
        self.store = store
        self.environment = environment
        self.releases = ReleaseLog(store, environment)
        self._lock = PipelineLock(store, environment)
        store.ensure_dir(f"{environment}/pipelines")

    # -- the lock ------------------------------------------------------------------------------
    @property
    def lock_file(self) -> str:
        return f"{self.environment}/pipelines/lock.json"

    def lock(self) -> LockInfo | None:
        return self._lock.lock()

    def acquire(self, operation: str, *, ttl_s: int) -> LockInfo:
        return self._lock.acquire(operation, ttl_s=ttl_s)

    def refresh(self, lock: LockInfo) -> LockInfo:
        return self._lock.refresh(lock)

    def release(self, lock: LockInfo) -> None:
        self._lock.release(lock)

    # -- records -------------------------------------------------------------------------------
    def _record_file(self, tag: str) -> str:
        return f"{self.environment}/pipelines/{tag}.json"

    def load(self, tag: str) -> PipelineRecord | None:
        raw = self.store.read(self._record_file(tag))
        if raw is None:
            return None
        try:
            return PipelineRecord.from_dict(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise DeployError(
                f"the pipeline record of {tag} in the backup store is unreadable: {exc}",
                untouched="nothing was done",
                hint=f"remove {self._record_file(tag)} from the store to start {tag} afresh",
            ) from None

    def save(self, record: PipelineRecord) -> None:
        self.store.write(self._record_file(record.tag), _dump(record))

    def newest_release(self, kind: str) -> ReleaseRecord | None:
        """The environment's newest release record of `kind` (deploy, migrate, rollback)."""
        records = [r for r in self.releases.releases() if r.kind == kind]
        return records[-1] if records else None

    # -- the checks' evidence ------------------------------------------------------------------
    def evidence_dir(self, tag: str) -> str:
        return f"{self.environment}/pipelines/{tag}"

    def save_evidence(self, tag: str, step: str, data: Any) -> None:
        """A check's result in the form of its `--json` output, as the report reads it."""
        self.store.ensure_dir(self.evidence_dir(tag))
        self.store.write(
            f"{self.evidence_dir(tag)}/{step}.json", _dump({"ok": True, "result": data})
        )

    def evidence(self, tag: str) -> dict[str, bytes]:
        directory = self.evidence_dir(tag)
        if not self.store.exists(directory):
            return {}
        found = {}
        for name in self.store.list_files(directory, ".json"):
            raw = self.store.read(f"{directory}/{name}")
            if raw is not None:
                found[name] = raw
        return found

    def clear_evidence(self, tag: str, steps: set[str]) -> None:
        self.store.remove(*(f"{self.evidence_dir(tag)}/{s}.json" for s in sorted(steps)))


def _dump(value: Any) -> bytes:
    return json.dumps(jsonable(value), indent=2, sort_keys=True, default=str).encode() + b"\n"
