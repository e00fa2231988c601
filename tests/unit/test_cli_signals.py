"""A cancelled CI job (GitHub: SIGINT, SIGTERM 7.5 s later, then SIGKILL) leaves no lock behind.

Without a handler, SIGTERM ends Python at once: no `finally` runs, the environment's lock stays
with the runner's (gone) host, and the next release stops on LockHeld until someone runs
`lock break`. The CLI turns the first SIGINT or SIGTERM into KeyboardInterrupt, so every
`with history.locked(...)` releases its lock, and ignores the ones after it while that runs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHILD = textwrap.dedent(
    """
    import sys, time
    from deploytools.cli.signals import install_signal_handlers
    from deploytools.store.environment import EnvironmentStore
    from tests.fakes.memory_store import MemoryStore

    install_signal_handlers()
    store = MemoryStore()
    history = EnvironmentStore(store, "production")
    try:
        with history.locked("deploy", ttl_s=600):
            try:
                print("locked", flush=True)
                time.sleep(30)
            finally:
                # the cleanup runs while the second signal arrives: it must not be cut short
                print("cleaning", flush=True)
                time.sleep(1.0)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print("lock left" if store.read("production/lock.json") else "lock released", flush=True)
    """
)


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_releases_the_lock_and_a_second_does_not_cut_the_cleanup(
    first: signal.Signals,
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parents[2]),
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        child.send_signal(first)
        assert child.stdout.readline().strip() == "cleaning"
        child.send_signal(signal.SIGTERM)  # GitHub's second signal, during the cleanup
        out, err = child.communicate(timeout=20)
    assert out.split() == ["interrupted", "lock", "released"], out + err
