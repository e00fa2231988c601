"""The store's kept helper: one helper container per store, image and engine, left running between
commands so that a command reaches the store with a `docker exec` instead of a `docker run`
(starting a container is the slowest step of a short command such as a rollback by switch).

A kept helper carries labels saying what it mounts (KEPT_LABEL: the contract of this module,
STORE_LABEL: the store as deploy.toml names it, IMAGE_LABEL: the image it was asked to run). A
command reuses a running one whose labels, mount and image match; otherwise it starts one. Any
number may run at once (two commands that start together each start one); each goes away on
its own:

- Its main process (IDLE_SCRIPT) exits, and the engine removes the container (auto-remove, its
  anonymous volumes too), once no process but itself has run in it for its idle time
  (session.py: the environment's watch window, at least MIN_IDLE_S): a command that uses it
  keeps an exec open in it from start to end (`Lease`), so it never goes away under a
  command, and a killed command's exec ends with its connection.
- Before it exits it leaves a mark (EXITING_MARK) and looks once more: a lease taken meanwhile
  sees the mark and is refused (the command then starts a helper of its own), or is seen by
  that last look and keeps the helper up. So a lease is held only in a helper that stays.

A helper of another contract (an older or newer deploytools), of another store or image, or one
that is stopping, is never reused; it goes away after its own idle time, or with its command.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence

from deploytools.engine.client import Container, Engine, Mount, OneOff
from deploytools.engine.errors import EngineError
from deploytools.engine.exec import AttachedExec
from deploytools.errors import DeployError

#: What every helper of the store is labelled (with the value ROLE), kept or not.
HELPER_LABEL = "deploytools.role"
ROLE = "backup-store-helper"
#: The contract of a kept helper (its main script, the lease): bumped when either changes, so
#: that a deploytools never leases a helper whose protocol it does not know.
KEPT_LABEL = "deploytools.store-helper"
CONTRACT = "1"
STORE_LABEL = "deploytools.store"
IMAGE_LABEL = "deploytools.store-image"
#: Where the helper mounts the store.
MOUNT = "/store"
#: The shortest idle time of a kept helper, and how often it looks for other processes.
MIN_IDLE_S = 600
POLL_S = 5
#: Left by the helper's main process when it is about to exit (see the module's docstring).
EXITING_MARK = "/.deploytools-helper-exiting"  # in its own writable layer, as root
#: How long a lease waits for the helper to say it holds.
LEASE_TIMEOUT_S = 10.0

#: The kept helper's main process: $1 the idle time, $2 the poll interval (seconds). Only
#: builtins run between a wait and a look at /proc (no child of its own there to count).
IDLE_SCRIPT = f"""
trap 'exit 0' TERM INT
idle=0
busy() {{
    for p in /proc/[0-9]*; do [ "${{p#/proc/}}" = 1 ] || return 0; done
    return 1
}}
while :; do
    sleep "$2" & wait $!
    if busy; then idle=0; continue; fi
    idle=$((idle + $2))
    [ "$idle" -lt "$1" ] && continue
    : > {EXITING_MARK}
    busy || exit 0
    rm -f {EXITING_MARK}
    idle=0
done
"""

#: A lease: refused when the helper is about to exit; else says so and holds until its stdin
#: closes (the command's end, or its connection's).
LEASE_SCRIPT = f"[ -e {EXITING_MARK} ] && exit 3; echo held; exec cat > /dev/null"
HELD = b"held"


class Lease:
    """A command's hold on a kept helper: an exec open in it until `release`."""

    def __init__(self, container: Container, session: AttachedExec) -> None:
        self.container = container
        self._session = session

    def release(self) -> None:
        with contextlib.suppress(OSError, DeployError):
            self._session.close()


def take_lease(container: Container, *, timeout_s: float = LEASE_TIMEOUT_S) -> Lease | None:
    """Hold `container` for this command, or None when it is stopping or gone."""
    try:
        session = container.exec_attached(["sh", "-c", LEASE_SCRIPT])
    except DeployError:
        return None  # not running any more (the engine refused the exec)
    said = b""
    try:
        while HELD not in said:
            frame = session.read_frame(timeout_s=timeout_s)
            if frame is None:
                break
            said += frame[1]
    except (OSError, DeployError):
        pass
    if HELD in said:
        return Lease(container, session)
    with contextlib.suppress(OSError, DeployError):
        session.close()
    return None


def kept_labels(store: str, image: str) -> dict[str, str]:
    return {HELPER_LABEL: ROLE, KEPT_LABEL: CONTRACT, STORE_LABEL: store, IMAGE_LABEL: image}


def mounts_store(container: Container, mount: Mount) -> bool:
    """Whether `container` mounts at MOUNT what `mount` names (the labels could lie: a container
    started by hand with them, or a store volume removed and made again is still the same)."""
    for found in container.attrs.get("Mounts") or []:
        if found.get("Destination") != mount.target:
            continue
        if mount.kind == "volume":
            return bool(found.get("Type") == "volume" and found.get("Name") == mount.source)
        return bool(found.get("Type") == "bind" and found.get("Source") == mount.source)
    return False


def reusable(engine: Engine, store: str, image: str, mount: Mount) -> list[Container]:
    """The running kept helpers of `store` with `image` that mount it, newest first."""
    labels = [f"{k}={v}" for k, v in kept_labels(store, image).items()]
    found = [
        c
        for c in engine.containers(labels=labels, all=False)
        if c.labels.get(IMAGE_LABEL) == image
        and c.labels.get(STORE_LABEL) == store
        and (c.attrs.get("Config") or {}).get("Image") == image
        and mounts_store(c, mount)
    ]
    return sorted(found, key=lambda c: str((c.attrs.get("State") or {}).get("StartedAt")))[::-1]


def lease_reusable(engine: Engine, store: str, image: str, mount: Mount) -> Lease | None:
    """A lease on a running kept helper of `store`, or None when none can be held."""
    for container in reusable(engine, store, image, mount):
        lease = take_lease(container)
        if lease is not None:
            return lease
    return None


def kept_spec(
    store: str,
    image: str,
    *,
    name_prefix: str,
    mounts: Sequence[Mount],
    idle_s: float,
    poll_s: float = POLL_S,
) -> OneOff:
    """A kept helper of `store`: IDLE_SCRIPT as its main process, auto-removed when it exits
    once unused for `idle_s` (looking every `poll_s`; whole seconds)."""
    idle, poll = max(1, round(idle_s)), max(1, round(poll_s))
    return OneOff(
        image=image,
        name=f"{name_prefix}-store-{secrets.token_hex(3)}",
        entrypoint=["sh", "-c", IDLE_SCRIPT, "sh", str(idle), str(poll)],
        command=[],
        auto_remove=True,
        user="0",
        network_mode="none",
        labels=kept_labels(store, image),
        mounts=mounts,
    )


def start_kept(engine: Engine, spec: OneOff) -> Lease:
    """Start a kept helper and hold it (EngineError when the engine refuses it)."""
    container = engine.run(spec)
    lease = take_lease(container)
    if lease is None:
        with contextlib.suppress(EngineError):
            container.remove(force=True, volumes=True)
        raise EngineError(f"the store's helper {spec.name} stopped as soon as it started")
    return lease
