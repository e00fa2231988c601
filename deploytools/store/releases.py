"""The release records of an environment: one per deploy, migrate or rollback, and the check
results added to them."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from deploytools.errors import DeadlineExceeded
from deploytools.store.layout import EnvironmentFiles
from deploytools.store.records import ReleaseRecord, dump, from_dict, who

#: The check summaries a record keeps (the 24-hour watch runs monitor every few minutes).
CHECKS_KEPT = 50
#: How long a check run waits for another one adding its results to the same record, and after
#: how long a record's checks lock counts as abandoned (its holder was killed mid-write).
CHECKS_LOCK_WAIT_S = 30.0
CHECKS_LOCK_STALE_S = 60.0


class ReleaseLog(EnvironmentFiles):
    """The release records of one environment in an open store."""

    def releases(self) -> list[ReleaseRecord]:
        """Every record, oldest first."""
        return self.releases_and_next_id()[0]

    def releases_and_next_id(self) -> tuple[list[ReleaseRecord], str]:
        """Every record, oldest first, and the id the next one takes (`next_release_id`), from
        one read of the store: under the deploy lock, one exec fewer than both apart."""
        return self.parse_releases(self.store.read_all(*self.releases_files))

    @property
    def releases_files(self) -> tuple[str, str]:
        """Where the records are: their directory and suffix, as `read_all` takes them."""
        return f"{self.environment}/releases", ".json"

    @staticmethod
    def parse_releases(files: dict[str, bytes]) -> tuple[list[ReleaseRecord], str]:
        """The records of `releases_files` as read (`releases_and_next_id`)."""
        records = [from_dict(ReleaseRecord, json.loads(raw)) for _, raw in sorted(files.items())]
        return records, _next_id(list(files))

    def next_release_id(self) -> str:
        return _next_id(self.store.list_files(f"{self.environment}/releases", ".json"))

    def save_release(self, record: ReleaseRecord) -> None:
        self.store.write(f"{self.environment}/releases/{record.id}.json", dump(record))

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
            record = from_dict(ReleaseRecord, json.loads(raw))
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


def _next_id(names: list[str]) -> str:
    """The id after the highest numbered record file among `names` (NNNN.json)."""
    numbers = [int(n.removesuffix(".json")) for n in names if n[:-5].isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"
