"""SIGINT and SIGTERM end a command the way Ctrl-C does: every `finally` runs.

A cancelled GitHub Actions job gets SIGINT, SIGTERM 7.5 s later, then SIGKILL. Python's default
SIGTERM ends the process at once, so an environment's deploy lock (store/locks.py, released in a
`finally`) would stay behind with the runner's host and pid, and the next release would stop on
LockHeld until someone ran `lock break`. The first of these signals raises KeyboardInterrupt
wherever the command is; the ones after it are ignored, so the cleanup it set off (releasing
the lock; in a recreate deploy whose app is stopped, putting a release back first:
steps/deploy_cancel.py) is not cut short by the second.
"""

from __future__ import annotations

import signal
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")


def install_signal_handlers() -> None:
    """Turn the first SIGINT or SIGTERM into KeyboardInterrupt (the main thread only)."""
    for sig in _SIGNALS:
        signal.signal(sig, _interrupt)
