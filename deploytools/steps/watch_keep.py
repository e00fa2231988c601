"""The watch window after a rolling deploy: the previous release's container stays up, drained
and taking no traffic, until `[deploy] watch_window_s` after the switch (monitor's watch of the
release). A rollback in that window is a proxy switch back to it, under a second:

    the kept container still runs and is healthy, the rollback goes back to its image, and no
    database restore is needed -> pin the proxy to its address (the new one drains) -> stop and
    remove the new container -> the proxy back on the service's server (the kept one's address)

Otherwise a rollback takes the cold path (rollback.py) after this module stopped the kept
container. While a container is kept, the proxy stays pinned to the serving container's slot:
the service's name answers with both containers.

Who stops it: any deploy (a new one replaces it: only the immediately previous release is kept),
a rollback that does not switch back to it, and `monitor` once the window has ended (under the
deploy lock; `status` only shows it). Its id, name and end are in the deploy's release record
(`kept_container`, `kept_container_name`, `kept_until`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from deploytools import proxy
from deploytools.checks import containers as container_stats
from deploytools.context import StepContext
from deploytools.engine.client import Container
from deploytools.engine.errors import EngineError, NotFound
from deploytools.errors import DeployError, LockHeld
from deploytools.session import EnvSession, open_environment
from deploytools.steps import app_service
from deploytools.store.records import ReleaseRecord, parse_time, utc_now
from deploytools.target import Target

#: How long the proxy's switch back may wait for the newer release's requests to finish.
SWITCH_TIMEOUT_S = 60.0
#: The pause between a switch (a rolling deploy's, or the switch back) and the stop of the
#: container it took the traffic from. That one takes no request any more; its stop (SIGTERM,
#: gunicorn's exit, the engine's teardown: 1-1.5 s of work on 2 cores) then does not land on
#: the first requests of the one that serves (benchmarks/rolling_bench.py: 13-21 ms answers in
#: the first 20 ms after the cut when the stop began 5 ms after it, against a steady p99 of
#: 10 ms).
STOP_SETTLE_S = 0.5


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def keep(
    record: ReleaseRecord, container: Container, *, window_s: float, now: float | None = None
) -> None:
    """Note in `record` (a rolling deploy's) that `container` of the release before it stays up
    until `window_s` seconds from `now`."""
    until = _utc((time.time() if now is None else now) + window_s)
    record.kept_container, record.kept_container_name = container.id, container.name
    record.kept_until = until
    record.notes.append(
        f"the previous release's container {container.name} is kept up, drained, until "
        f"{until}: a rollback before then switches the proxy back to it"
    )


def expired(record: ReleaseRecord, now: float) -> bool:
    """Whether `record`'s kept container is past its window (`now`: a Unix time)."""
    return record.kept_until is None or parse_time(record.kept_until) <= now


@dataclass(frozen=True)
class KeptState:
    """What the engine says of a kept container."""

    running: bool
    healthy: bool
    health: str | None
    image_id: str


def observe(container: Container | None) -> KeptState | None:
    """`container`'s state as last read from the engine (`kept_container` just did), or None
    when it is gone. No request of its own: a rollback in the window reads it on its way to
    the switch."""
    if container is None:
        return None
    state = container.attrs.get("State") or {}
    health = (state.get("Health") or {}).get("Status")
    running = state.get("Status") == "running"
    healthy = running and health in (None, "healthy")
    return KeptState(running, healthy, health, container.image_id)


def switch_back_refusal(
    *,
    current: ReleaseRecord,
    target_image_id: str,
    restore: bool,
    proxy_running: bool,
    kept: KeptState | None,
    now: float,
) -> str | None:
    """Why a rollback of `current` may not switch back to its kept container, or None when it
    may (the rule of this module's docstring). `restore`: a restore is asked for or may be
    needed. Pure: the caller observes the engine."""
    if current.kept_container is None:
        return "no container of the previous release is kept"
    if expired(current, now):
        return f"the watch window ended at {current.kept_until}"
    if restore:
        return (
            "the rollback may restore the database (asked for, or a newer release's "
            "migrations are not expand-only)"
        )
    if not proxy_running:
        return "the proxy does not run"
    if kept is None:
        return f"the kept container {current.kept_container_name} is gone"
    if not kept.running:
        return f"the kept container {current.kept_container_name} does not run"
    if not kept.healthy:
        return f"the kept container {current.kept_container_name} is not healthy ({kept.health})"
    if target_image_id and kept.image_id != target_image_id:
        return "the rollback goes to another release than the kept container's"
    return None


def kept_container(target: Target, record: ReleaseRecord) -> Container | None:
    """`record`'s kept container on the engine, or None (none kept, or gone)."""
    if record.kept_container is None:
        return None
    try:
        return target.engine.container(record.kept_container)
    except NotFound:
        return None


@dataclass
class SwitchSession:
    """The proxy and a runtime API session with it, opened before a rollback takes the lock."""

    gateway: Container
    api: proxy.RuntimeApi


def open_switch_session(target: Target) -> SwitchSession | None:
    """The environment's proxy with a runtime API session open on it, or None (no proxy, or the
    session could not be opened: the switch opens its own then). Opened first by a rollback:
    the engine starts the session's client in the proxy container while the store is opened
    and locked, so a switch back finds it answering; the caller closes it."""
    try:
        gateway = proxy.container(target)
        return None if gateway is None else SwitchSession(gateway, proxy.RuntimeApi(gateway))
    except (DeployError, EngineError):
        return None


def switch_back(
    session: EnvSession,
    current: ReleaseRecord,
    kept: Container,
    phases: app_service.Phases,
    *,
    gateway: Container,
    api: proxy.RuntimeApi | None = None,
) -> None:
    """The rollback in the window: the proxy (`gateway`, running) to `kept`, the newer release
    drained, stopped and removed, the proxy back on the service's server. `api`: a session
    open on `gateway` (its caller closes it), else one is opened here."""
    target = session.target
    service = session.ctx.config.project.app_service
    port = proxy.settings(target).app_port
    own = api is None
    api = api or proxy.RuntimeApi(gateway)
    try:
        # The cut-over's phases are saved with the step's outcome (as a rolling deploy's).
        with phases.phase("switch", save=False):
            back = proxy.address(kept, gateway)
            prepared = proxy.prepare(
                gateway, back, timeout_s=SWITCH_TIMEOUT_S, session=api, app_port=port
            )
            proxy.cut(prepared)
            cut_at = time.monotonic()
            # Before the phase's end (which refreshes the lock): the moment of the switch.
            session.progress(f"rollback: the proxy switched back to {kept.name}")
        # The rollback's record is first written now, in the pause before the newer release
        # stops: the switch waits for no store write. Killed between the cut and this write,
        # a rollback leaves the deploy's record naming the kept container, which serves: the
        # next rollback switches to it again (nothing moves) and stops the newer one.
        session.history.save_release(phases.record)
        with phases.phase("drain", save=False):
            newer = [c for c in target.running(service) if c.id != kept.id]
            settle(gateway, api, newer, back, port=port, since=cut_at)
    finally:
        if own:
            api.close()
    current.kept_container = None
    current.notes.append(f"{current.kept_container_name} serves again: rolled back by switch")
    session.history.save_release(current)


def settle(
    gateway: Container,
    api: proxy.RuntimeApi,
    drained: list[Container],
    serving: str,
    *,
    port: int,
    since: float | None = None,
) -> None:
    """The end of a switch: after a pause (STOP_SETTLE_S, counted from `since`, the cut's
    monotonic time, when given), stop and remove the `drained` containers, then put the proxy
    back on the service's server, set to `serving` (the address of the one container left
    answering to the service's name: the steady state). The slot and that server reach the
    same container, so nothing to wait for."""
    waited = 0.0 if since is None else time.monotonic() - since
    time.sleep(max(0.0, STOP_SETTLE_S - waited))
    for container in drained:
        app_service.stop_and_remove(container)
    proxy.switch(gateway, None, service_address=serving, wait=False, session=api, app_port=port)


def retire(session: EnvSession, record: ReleaseRecord, *, why: str) -> str:
    """Stop and remove `record`'s kept container, put the proxy back on the service's server
    (the serving container's address), and say so in the record; what was done."""
    target = session.target
    name = record.kept_container_name or record.kept_container or "?"
    found = kept_container(target, record)
    if found is not None:
        app_service.stop_and_remove(found)
    gateway = proxy.container(target)
    serving = target.running(session.ctx.config.project.app_service)
    if gateway is not None and len(serving) == 1:
        address = proxy.address(serving[0], gateway)
        port = proxy.settings(target).app_port
        proxy.switch(gateway, None, service_address=address, wait=False, app_port=port)
    record.kept_container = None
    done = f"the kept container {name} was stopped and removed: {why}"
    record.notes.append(done)
    session.history.save_release(record)
    session.progress(done)
    return done


def retire_all(session: EnvSession, records: list[ReleaseRecord], *, why: str) -> list[str]:
    """`retire` every kept container in `records` (under the lock)."""
    return [retire(session, r, why=why) for r in records if r.kept_container is not None]


def retire_expired(ctx: StepContext, environment: str, *, now: float | None = None) -> list[str]:
    """`monitor`'s end: stop and remove the kept containers whose window has ended, under the
    deploy lock; a lock held by another command leaves them to it (a deploy or a rollback
    stops them itself). What was done."""
    at = time.time() if now is None else now
    with open_environment(ctx, environment) as session:
        due = [r for r in session.history.releases() if r.kept_container and expired(r, at)]
        if not due:
            return []
        ttl = ctx.config.deploy.lock_ttl_s
        try:
            with session.history.locked("retire kept container", ttl_s=ttl) as lock:
                session.lock = lock
                records = session.history.releases()  # as they are under the lock
                due = [r for r in records if r.kept_container and expired(r, at)]
                return retire_all(session, due, why=f"its watch window ended ({utc_now()})")
        except LockHeld:
            return []


@dataclass(frozen=True)
class KeptStatus:
    """`status`: the container kept for a rollback by switch."""

    container: str
    release: str  # the record that kept it
    until: str
    expired: bool
    state: str  # running, exited, gone
    health: str | None
    memory_mb: float | None


def status(
    target: Target, record: ReleaseRecord | None, *, now: float | None = None
) -> KeptStatus | None:
    """The kept container of the serving `record`, read only (its memory: one stats reading)."""
    if record is None or record.kept_container is None:
        return None
    found = kept_container(target, record)
    state = observe(found)
    memory: float | None = None
    if found is not None and state is not None and state.running:
        with contextlib.suppress(DeployError, EngineError):
            raw = container_stats.raw_stats(found)
            memory = round(container_stats.memory_bytes(raw) / (1024 * 1024), 1)
    return KeptStatus(
        container=record.kept_container_name or record.kept_container,
        release=record.id,
        until=record.kept_until or "?",
        expired=expired(record, time.time() if now is None else now),
        state="gone" if state is None else ("running" if state.running else "stopped"),
        health=None if state is None else state.health,
        memory_mb=memory,
    )
