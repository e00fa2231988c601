"""The deploy lock of an environment: one deploy, migrate, restore or rollback at a time."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator

from deploytools.errors import LockHeld
from deploytools.store.layout import EnvironmentFiles
from deploytools.store.records import LockInfo, dump, from_dict, utc_now, who


class DeployLock(EnvironmentFiles):
    """The lock of one environment in an open store (`_lock_file` says where it is kept)."""

    def lock(self) -> LockInfo | None:
        raw = self.store.read(self._lock_file)
        return None if raw is None else from_dict(LockInfo, json.loads(raw))

    def acquire(self, operation: str, *, ttl_s: int, wait_s: float = 0.0) -> LockInfo:
        """Take the environment's lock or raise LockHeld at once (or after `wait_s`)."""
        return self._acquire(operation, ttl_s=ttl_s, wait_s=wait_s, read=None)[0]

    def _acquire(
        self, operation: str, *, ttl_s: int, wait_s: float, read: tuple[str, str] | None
    ) -> tuple[LockInfo, dict[str, bytes]]:
        """`acquire`; with `read` (a directory and a suffix), also the files `read_all` gives,
        read in the same exec once the lock is ours."""
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
            if read is None:
                if self.store.create_exclusive(self._lock_file, dump(mine)):
                    return mine, {}
            else:
                files = self.store.create_exclusive_then_read_all(
                    self._lock_file, dump(mine), *read
                )
                if files is not None:
                    return mine, files
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
            self.store.write(self._lock_file, dump(fresh))
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
        with self.locked_reading(operation, ttl_s=ttl_s, wait_s=wait_s) as (lock, _):
            yield lock

    @contextlib.contextmanager
    def locked_reading(
        self,
        operation: str,
        *,
        ttl_s: int,
        wait_s: float = 0.0,
        read: tuple[str, str] | None = None,
    ) -> Iterator[tuple[LockInfo, dict[str, bytes]]]:
        """`locked`, and the files of `read` (a directory and a suffix, as `read_all` takes
        them) read in the lock's own exec once it is ours ({} without `read`)."""
        lock, files = self._acquire(operation, ttl_s=ttl_s, wait_s=wait_s, read=read)
        try:
            yield lock, files
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
