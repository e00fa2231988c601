"""The rolling deploy strategy: the new release starts beside the old one behind the proxy and
takes the traffic only once it is healthy and answers its smoke check; the old one is drained
and then stopped. Users see no error and no gap.

    migrate (expand-only) -> pin the proxy to the old container's address -> start the new
    container beside it -> healthy -> smoke check of the new container's health route, asked
    from the proxy container -> warm it up (concurrent requests to that route: its database
    pool and threads open before the traffic arrives) ->
    switch the proxy to its address (prepared before: a free slot of HAProxy's backend set to
    the address; the cut readies that slot and puts the others in
    maintenance, their requests in flight finish) -> stop the old one with its grace period,
    remove it -> the proxy back on the service's server (only the new container answers to the
    name now; its address is set, so nothing waits for the DNS)

The pins name addresses, not container names: the engine's DNS is busy with this very deploy
(proxy.address). All the deploy's switches go through one runtime API session, opened before
the start (one exec), and the switch onto the new container is prepared in the smoke phase,
so the cut-over starts no process in any container (proxy.cut: one line written on the open
session): every exec costs the engine a runc start, CPU taken from the requests being
switched on a small machine. For the same reason the cut-over's phases do not save the record
on their own.

Until the switch, a failure removes the new container and the old one never stops serving
(OldReleaseServing: no rollback is needed). Rolling needs migrations the old release runs on,
i.e. expand-only ones (release verification's lint, the image label
deploytools.migrations.expand-only): both releases share the database for a while. Otherwise
the recreate strategy with a maintenance window applies.

Rollback uses the same switch (`roll_to`) when the environment runs behind the proxy and no
database restore is needed.

With the watch window on ([deploy] watch_window_s) a deploy does not stop the old container: it
stays up, drained, the proxy pinned to the new one's slot, for a rollback by switch back to it
(steps/watch_keep.py).
"""

from __future__ import annotations

import contextlib
import time

from deploytools import proxy
from deploytools.engine.client import Container
from deploytools.engine.errors import EngineError
from deploytools.errors import CheckFailed, DeployError, UsageError
from deploytools.proxy_settings import ProxySettings
from deploytools.session import EnvSession
from deploytools.steps import app_service, watch_keep
from deploytools.steps import migrate as migrate_step
from deploytools.store.records import ReleaseRecord
from deploytools.target import wait_until_healthy

#: The warm-up after the smoke check: rounds of concurrent requests to the new container's
#: health route, so the switch hands the traffic to warm workers. A fresh gunicorn opens its
#: database pool (one connection per thread) and its threads on the first concurrent requests;
#: measured under 100 requests/s on 2 cores (benchmarks/rolling_bench.py,
#: ROLLING_BENCH_PROBES=1), that was a burst of 300-450 ms answers right after the switch, the
#: rollback's whole cut-over tail. Both are sent from the proxy container over the project's
#: network (proxy.ask, proxy.warm): the app's image needs no HTTP client of its own.
WARM_CONCURRENCY = 16
WARM_ROUNDS = 3


#: How long the proxy's old workers may take to finish their requests after a switch.
SWITCH_TIMEOUT_S = 60.0
#: The pause between preparing the switch and cutting it.
CUT_SETTLE_S = 0.5
#: The deadline of the smoke check and of the warm-up, each.
IN_CONTAINER_TIMEOUT_S = 120.0


def refusal(info: migrate_step.ImageInfo, environment: str) -> UsageError | None:
    """Why `info` may not be deployed with rolling, or None when it may."""
    if info.expand_only is True:
        return None
    why = (
        "its migrations are not expand-only"
        if info.expand_only is False
        else "it does not declare its migrations expand-only (image label "
        "deploytools.migrations.expand-only)"
    )
    return UsageError(
        f"rolling deploy of {info.ref} to {environment} refused: {why}, so the old release, "
        "which keeps serving during a rolling deploy, might not run on the new schema",
        untouched="nothing was done",
        hint="deploy with --strategy recreate in a maintenance window (the runbook's way), or "
        "make the release's migrations expand-only (release verify classifies them)",
    )


def proxy_refusal(session: EnvSession) -> UsageError | None:
    """Why the environment's proxy cannot switch the traffic for a rolling deploy, or None when
    it can (the proxy is started when its service is defined and does not run, as a deploy
    starts it). `facts["reason"]` says why in a few words (the auto strategy records it).

    Asked before the lock, the backup and the migration: a proxy that cannot switch (none,
    another proxy, or another config than deploytools') refuses the deploy with nothing done."""
    target = session.target
    resolved = proxy.settings(target)  # the Compose files, read once for both questions
    cannot = proxy.switch_refusal(target, resolved)
    if cannot is not None:
        return UsageError(
            f"rolling deploy to {target.name} refused: {cannot}",
            untouched="nothing was done",
            hint="put the stack behind deploytools' proxy first: `deploytools proxy start "
            f"--env {target.name}` on another port, move the traffic to it, then replace "
            "the app's `ports` by `expose` (docs/zero-downtime.md, adopting a stack); or "
            "use --strategy recreate in a maintenance window",
            facts={"reason": f"the proxy cannot switch traffic: {cannot}"},
        )
    # Started here when it does not run: deploytools' own proxy, or the Compose files'.
    gateway = proxy.ensure_running(
        target, timeout_s=session.ctx.config.deploy.health_timeout_s, resolved=resolved
    )
    if gateway is None:  # never: ensure_running starts deploytools' own
        return UsageError(
            f"environment {target.name} has no proxy to switch traffic with",
            untouched="nothing was done",
            facts={"reason": "no proxy to switch traffic with"},
        )
    api = proxy.RuntimeApi(gateway)
    try:
        proxy.read_servers(api)
    except DeployError as error:
        return UsageError(
            f"rolling deploy to {session.target.name} refused: {error.message}",
            untouched="nothing was done",
            hint=error.hint,
            facts={"reason": f"the proxy cannot switch traffic: {error.message}"},
        )
    finally:
        api.close()
    return None


class RollingStrategy:
    """Start beside, check, switch the proxy, drain the old one: no downtime."""

    name = "rolling"

    def admit(self, session: EnvSession, info: migrate_step.ImageInfo) -> None:
        refused = refusal(info, session.target.name) or proxy_refusal(session)
        if refused is not None:
            raise refused

    def replace(
        self, session: EnvSession, record: ReleaseRecord, phases: app_service.Phases
    ) -> None:
        with phases.phase("migrate"):
            try:
                result = migrate_step.run_in(
                    session, image=record.image, no_backup_check=record.no_backup_check
                )
            except DeployError as error:
                raise app_service.MigrationFailed(
                    error.message, untouched=error.untouched, hint=error.hint, facts=error.facts
                ) from error
            record.revision_after = result.revision_after
        window_s = session.ctx.config.deploy.watch_window_s
        kept = roll_to(session, record.image, phases, keep=window_s > 0)
        if kept is not None:
            watch_keep.keep(record, kept, window_s=window_s)


def roll_to(
    session: EnvSession, image: str, phases: app_service.Phases, *, keep: bool = False
) -> Container | None:
    """Replace the running app containers by one of `image` without a gap (see the module's
    docstring). Raises OldReleaseServing when the new container failed before the switch.

    `keep`: when one old container served, leave it running, drained and taking no traffic
    (the proxy stays pinned to the new one's slot; steps/watch_keep.py), and return it."""
    target = session.target
    config = session.ctx.config
    service = config.project.app_service
    resolved = proxy.settings(target)
    gateway = proxy.ensure_running(
        target, timeout_s=config.deploy.health_timeout_s, resolved=resolved
    )
    if gateway is None:
        raise UsageError(f"environment {target.name} has no proxy to switch traffic with")
    for dead in [c for c in target.containers(service) if c.status != "running"]:
        with contextlib.suppress(EngineError):
            dead.remove(force=True)
    old = target.containers(service)
    # One runtime API session for the deploy's switches (one exec, before the start): the
    # cut-over starts no process in any container.
    api = proxy.RuntimeApi(gateway)
    try:
        kept = _roll_to(
            session,
            image,
            phases,
            gateway,
            api,
            old,
            resolved,
            keep=keep and len(old) == 1,
        )
    finally:
        api.close()
    if kept is not None:
        session.progress(
            f"rolling: {image} serves; the old release's {kept.name} was drained and is kept "
            "for a rollback by switch"
        )
    else:
        session.progress(f"rolling: {image} serves; the old release was drained and removed")
    return kept


def _roll_to(
    session: EnvSession,
    image: str,
    phases: app_service.Phases,
    gateway: Container,
    api: proxy.RuntimeApi,
    old: list[Container],
    settings: ProxySettings,
    *,
    keep: bool,
) -> Container | None:
    target = session.target
    config = session.ctx.config
    service = config.project.app_service
    new: Container | None = None
    port = settings.app_port
    try:
        with phases.phase("start"):
            if len(old) == 1:
                # While two containers answer to the service's name, the proxy must not use it.
                proxy.switch(gateway, proxy.address(old[0], gateway), session=api, app_port=port)
            started = target.start_beside(
                service,
                count=len(old) + 1,
                env={config.deploy.image_variable: image},
                what=f"starting {image} beside the running app",
            )
            if len(started) != 1:
                raise CheckFailed(
                    f"expected one new app container of {image}, found {len(started)}"
                )
            new = started[0]
            session.progress(f"rolling: {new.name} ({image}) started beside the old release")
        with phases.phase("healthy"):
            wait_until_healthy(new, timeout_s=config.deploy.health_timeout_s)
        with phases.phase("smoke"):
            new_address = proxy.address(new, gateway)
            smoke(new, gateway, new_address, settings)
            warm(new, gateway, new_address, settings)
            # The session open and a slot set to the new container's address: the switch
            # phase itself is one line on the session and the wait for the old one to drain.
            prepared = proxy.prepare(
                gateway, new_address, timeout_s=SWITCH_TIMEOUT_S, session=api, app_port=port
            )
        # Not on the heels of the execs before (the smoke check, the warm-up, the smoke
        # phase's record save): the engine's work for an exec (attach
        # streams, shim and runc teardown) takes the CPU for a while after it returned
        # (benchmarks/rolling_bench.py: 40-70 ms answers against a steady p99 of 11-17 ms).
        time.sleep(CUT_SETTLE_S)
        # The cut-over's phases are saved with the step's outcome (Phases.phase).
        with phases.phase("switch", save=False):
            proxy.cut(prepared)
    except BaseException as error:
        kept = _abandon(session, gateway, new, old, port)
        if isinstance(error, DeployError) and not isinstance(error, UsageError):
            raise app_service.OldReleaseServing(
                f"{image} did not take over: {error.message}",
                untouched=kept,
                hint=error.hint or "read the new release's logs; fix it and release again",
                facts={**error.facts, "image": image},
            ) from error
        raise
    if keep:
        # The old container stays up, drained: the proxy stays on the new one's slot (the
        # service's name answers with both containers now), until the watch ends.
        return old[0]
    with phases.phase("drain", save=False):
        # The old containers stopped after watch_keep.STOP_SETTLE_S, then the proxy on the
        # service's server at the new container's address. (The pin before the start waits:
        # the service's name is about to answer with a container that is not ready.)
        watch_keep.settle(gateway, api, old, new_address, port=port)
    return None


def smoke(container: Container, gateway: Container, address: str, settings: ProxySettings) -> None:
    """The new release's own health route at `address` (not through the proxy's backend),
    asked from the proxy container: the configured status and body."""
    health = settings.health
    try:
        answer = proxy.ask(
            gateway, address, settings.app_port, health.path, timeout_s=IN_CONTAINER_TIMEOUT_S
        )
    except CheckFailed as error:
        raise CheckFailed(
            f"smoke check of {container.name} failed: {error.message}",
            hint=f"read its logs: docker logs {container.name}",
        ) from error
    problems = health.problems(answer.status, answer.body)
    if problems:
        raise CheckFailed(
            f"smoke check of {container.name} failed: {health.path} said {answer.status} "
            f"{answer.body[-200:]!r} ({'; '.join(problems)}; want {health.describe()})",
            hint=f"read its logs: docker logs {container.name}; [proxy] health_* in deploy.toml",
        )


def warm(container: Container, gateway: Container, address: str, settings: ProxySettings) -> None:
    """Concurrent requests to the new container's health route (WARM_CONCURRENCY, WARM_ROUNDS)
    before it takes the traffic; one with another status fails the release like the smoke
    check."""
    try:
        proxy.warm(
            gateway,
            address,
            settings.app_port,
            settings.health,
            concurrency=WARM_CONCURRENCY,
            rounds=WARM_ROUNDS,
            timeout_s=IN_CONTAINER_TIMEOUT_S,
        )
    except CheckFailed as error:
        raise CheckFailed(
            f"warming {container.name} up failed: {error.message}",
            hint=f"read its logs: docker logs {container.name}",
        ) from error


def _abandon(
    session: EnvSession,
    gateway: Container,
    new: Container | None,
    old: list[Container],
    port: int,
) -> str:
    """Remove the new container and point the proxy at the service again; what still serves."""
    if new is not None:
        with contextlib.suppress(EngineError):
            new.remove(force=True)
    with contextlib.suppress(DeployError, EngineError, ValueError):
        back = proxy.address(old[0], gateway) if len(old) == 1 else None
        proxy.switch(gateway, None, service_address=back, app_port=port)
    names = ", ".join(c.name for c in old) or "nothing (no app was running)"
    return f"the new container was removed; the old release kept serving throughout: {names}"
