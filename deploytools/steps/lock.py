"""`deploytools lock show|break`: the deploy lock of an environment, seen and broken by hand.

The lock itself (who holds it, its time-to-live, breaking a lock whose holder is gone) is the
history's; deploy, migrate, restore and rollback take it themselves.
"""

from __future__ import annotations

from deploytools.context import StepContext
from deploytools.session import open_environment
from deploytools.store.records import LockInfo


def show(ctx: StepContext, *, environment: str) -> LockInfo | None:
    """Who holds `environment`'s deploy lock, since when; None: nobody."""
    with open_environment(ctx, environment, read_only=True) as session:
        return session.history.lock()


def break_lock(ctx: StepContext, *, environment: str, force: bool = False) -> LockInfo | None:
    """Remove a lock whose holder is gone (not refreshed within deploy.lock_ttl_s, or its
    process is dead on this host); with `force`, any lock. Returns the lock broken (None: there
    was none); raises LockHeld when it is still fresh and `force` is not set."""
    with open_environment(ctx, environment) as session:
        return session.history.break_lock(force=force)
