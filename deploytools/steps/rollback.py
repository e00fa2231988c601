"""The runbook's rollback plan: back to the previous (or a named) release's image.

When is the database restored? With --restore-db always. Without it, only when the newer
release's migrations changed the revision AND its record says they were not expand-only
(`expand_only: false`, from the image label deploytools.migrations.expand-only="false"). An
expand-only migration (new tables, nullable columns) leaves a schema the older release runs on,
and restoring would throw away every write made since the backup; when a release does not say,
we do not restore on our own but say that the schema stays ahead and how to restore.

Before a restore we say how many rows differ from the backup: the writes it would drop.

In the watch window after a rolling deploy, a rollback without a restore to the release before
is a switch of the proxy back to its container, kept up (steps/watch_keep.py); otherwise that
container is removed first and the rollback goes as above.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from deploytools import proxy
from deploytools.context import StepContext
from deploytools.database import Database
from deploytools.engine.errors import EngineError
from deploytools.errors import DeployError, UsageError
from deploytools.session import EnvSession, open_environment
from deploytools.steps import app_service, deploy_rolling, deploy_swarm, watch_keep
from deploytools.steps import backup as backup_step
from deploytools.store.records import ReleaseRecord, utc_now, who

Confirm = Callable[[str], bool]


@dataclass(frozen=True)
class RollbackTarget:
    """The release to go back to: a record, or the image that ran before the first record."""

    image: str
    image_id: str
    version: str | None
    record_id: str | None


def run(
    ctx: StepContext,
    *,
    environment: str,
    to: str | None = None,
    restore_db: bool = False,
    lock_wait_s: float = 0.0,
    confirm: Confirm | None = None,
    reason: str = "manual",
) -> ReleaseRecord:
    """Roll `environment` back, under the deploy lock.

    :param environment: the environment's name.
    :param to: the release to go back to: a record id, a version or an image; default the one
        before the release serving now.
    :param restore_db: restore the backup taken before the newer release's deploy.
    :param lock_wait_s: how long to wait for the lock.
    :param confirm: asked (with the rows a restore would drop) before a restore; False stops.
    :param reason: why, recorded on the rollback record: "manual", "verification failed",
        "monitor breach: ..." (what breached, with its values).
    """
    if ctx.config.environment(environment).is_swarm:
        # An update of the Swarm service to the earlier image (deploy_swarm.py).
        return deploy_swarm.rollback_run(
            ctx,
            environment=environment,
            to=to,
            restore_db=restore_db,
            lock_wait_s=lock_wait_s,
            reason=reason,
        )
    switch = watch_keep.open_switch_session(ctx.target(environment))
    try:
        return _run_locked(ctx, environment, to, restore_db, lock_wait_s, confirm, reason, switch)
    finally:
        if switch is not None:
            switch.api.close()


def _run_locked(
    ctx: StepContext,
    environment: str,
    to: str | None,
    restore_db: bool,
    lock_wait_s: float,
    confirm: Confirm | None,
    reason: str,
    switch: watch_keep.SwitchSession | None,
) -> ReleaseRecord:
    with open_environment(ctx, environment) as session:
        ttl = ctx.config.deploy.lock_ttl_s
        with session.history.locked_with_releases("rollback", ttl_s=ttl, wait_s=lock_wait_s) as (
            lock,
            records,
            next_id,
        ):
            session.lock = lock
            return roll_back_in(
                session,
                to=to,
                restore_db=restore_db,
                confirm=confirm,
                reason=reason,
                known=(records, next_id),
                switch=switch,
            )


def roll_back_in(
    session: EnvSession,
    *,
    failed: ReleaseRecord | None = None,
    to: str | None = None,
    restore_db: bool = False,
    confirm: Confirm | None = None,
    reason: str = "manual",
    known: tuple[list[ReleaseRecord], str] | None = None,
    switch: watch_keep.SwitchSession | None = None,
) -> ReleaseRecord:
    """Roll back within an open, locked environment. `failed` is a deploy that did not come up
    (an automatic rollback); otherwise the release serving now is rolled back. `known`: the
    records and the next record's id, as read under this lock (else they are read here).
    `switch`: the proxy with a session open on it, for a switch back (its caller closes it)."""
    history = session.history
    env = session.target.name
    records, record_id = known or history.releases_and_next_id()
    serving = [r for r in records if r.serving]
    current = failed or (serving[-1] if serving else None)
    if current is None:
        raise UsageError(
            f"environment {env} has no release deployed by deploytools to roll back from",
            untouched="nothing was done",
            hint=f"`deploytools history --env {env}`",
        )
    target, newer = _choose(session, serving, current, to)
    db = Database.of(session.target)
    # In the watch window after a rolling deploy: a switch back to the container kept up,
    # decided before anything else is read. It needs no restore: none asked for, and no newer
    # release declared its migrations not expand-only (then the revision decides nothing, and
    # it is read after the switch, which does not change it: two execs fewer before it).
    could_restore = restore_db or any(r.expand_only is False for r in newer)
    kept = watch_keep.kept_container(session.target, current) if not could_restore else None
    gateway = None
    if kept is not None:
        gateway = switch.gateway if switch is not None else proxy.container(session.target)
    cold_why = watch_keep.switch_back_refusal(
        current=current,
        target_image_id=target.image_id,
        restore=could_restore,
        proxy_running=gateway is not None,
        kept=watch_keep.observe(kept),
        now=time.time(),
    )
    revision_now = db.revision() if cold_why is not None else None
    revision_then = newer[0].revision_before if newer else revision_now
    revision_changed = cold_why is not None and revision_now != revision_then
    restore = restore_needed(restore_db=restore_db, revision_changed=revision_changed, newer=newer)
    backup_id = newer[0].backup_id if newer else None
    record = ReleaseRecord(
        id=record_id,
        environment=env,
        kind="rollback",
        who=who(),
        started=utc_now(),
        image=target.image,
        image_id=target.image_id,
        version=target.version,
        previous=current.id,
        previous_image=current.image,
        revision_before=revision_now,
        reason=reason,
        notes=[f"rollback from {current.id} ({current.image}): {reason}"],
    )
    if restore and backup_id is None:
        raise UsageError(
            f"a restore is needed to roll back {env} to {target.image}, but release "
            f"{newer[0].id if newer else current.id} has no backup recorded",
            untouched="nothing was done",
            hint="restore one by hand (`deploytools backup list` / `backup restore`)",
        )
    counts_now: dict[str, int] | None = None
    if restore and backup_id is not None:
        manifest = history.manifest(backup_id)
        counts_now = db.row_counts()
        dropped = backup_step.rows_dropped(counts_now, manifest.row_counts)
        message = (
            f"rollback: restoring backup {backup_id} (taken {manifest.created}, revision "
            f"{manifest.revision or 'none'}) drops {dropped} rows written since"
        )
        session.progress(message)
        record.notes.append(message)
        if confirm is not None and not confirm(message):
            raise UsageError(
                "rollback cancelled before the restore",
                untouched=f"nothing was done; {current.image} still runs",
            )
    elif revision_changed:
        session.progress(
            f"rollback: the schema stays at revision {revision_now} (release "
            f"{newer[0].id if newer else current.id} did not declare its migrations "
            "non-expand-only); pass --restore-db to restore "
            + (backup_id or "the pre-deploy backup")
        )
    if cold_why is None:
        record.watch_window_rollback = True
        record.notes.append(
            f"watch-window rollback: the proxy switched back to {current.kept_container_name}, "
            f"kept up since release {current.id} until {current.kept_until}"
        )
    else:
        if current.kept_container is not None:
            record.notes.append(f"not a watch-window rollback: {cold_why}")
        # The cold path replaces every app container: the kept one goes first.
        watch_keep.retire_all(
            session, records, why=f"the rollback does not switch back to it ({cold_why})"
        )
        # Saved before anything moves; the switch back saves it right after its cut.
        history.save_release(record)
    phases = app_service.Phases(session, record)
    prepared: backup_step.PreparedRestore | None = None
    restored: backup_step.RestoreResult | None = None
    try:
        if cold_why is None and kept is not None and gateway is not None:
            api = switch.api if switch is not None else None
            watch_keep.switch_back(session, current, kept, phases, gateway=gateway, api=api)
            record.revision_before = db.revision()
        elif not restore and proxy.container(session.target) is not None:
            # Behind the proxy and on the same schema: the rolling deploy's switch, no gap.
            deploy_rolling.roll_to(session, target.image, phases)
        else:
            if restore and backup_id is not None:
                # Into a scratch database while the newer release still serves; its writes
                # until the stop stay in the replaced database, and so in its safety backup.
                with phases.phase("restore"):
                    prepared = backup_step.prepare_restore(
                        session, backup_id, current_counts=counts_now
                    )
            with phases.phase("stop"):
                app_service.stop_app(session)
            if prepared is not None:
                with phases.phase("swap"):
                    # The safety backup of the replaced database is taken once the app
                    # serves again (below): it is kept under its own name until then.
                    restored = backup_step.swap_in(session, prepared, restart_app=False)
                    record.restored_backup = backup_id
                    record.kept_database = restored.kept_database
            with phases.phase("start"):
                app_service.start_app(session, target.image)
            with phases.phase("healthy"):
                app_service.wait_app_healthy(session)
    except BaseException as error:
        if prepared is not None and restored is None:
            backup_step.discard(session, prepared)  # not swapped in: the service's is intact
        if not isinstance(error, DeployError):
            raise
        record.outcome, record.finished, record.error = "failed", utc_now(), error.message
        history.save_release(record)
        error.message = f"rollback of {env} to {target.image} failed: {error.message}"
        if restored is not None and restored.kept_database:
            # Restored, but the app did not come up: the replaced data has no backup yet.
            error.untouched = (
                (error.untouched + "; " if error.untouched else "")
                + f"the database from before the restore is kept as {restored.kept_database}"
                + f" (`deploytools backup secure --env {env} {restored.kept_database}` takes "
                + "its verified backup and drops it)"
            )
        raise
    record.revision_after = db.revision()
    record.outcome, record.finished = "succeeded", utc_now()
    fast = record.watch_window_rollback
    history.save_release(record)
    session.progress(
        f"rollback {record.id}: {target.image} healthy in "
        f"{sum(record.timings.values()):.1f} s"
        + (" (switched back to the container kept in the watch window)" if fast else "")
        + (f", database restored from {backup_id}" if record.restored_backup else "")
    )
    if restored is not None and prepared is not None:
        _secure_replaced(session, record, restored, prepared.origin)
    return record


def _secure_replaced(
    session: EnvSession,
    record: ReleaseRecord,
    restored: backup_step.RestoreResult,
    origin: backup_step.Origin,
) -> None:
    """The rollback serves: now the safety backup of the database it replaced (kept under its
    own name), then that database is dropped. A failure keeps it and is recorded as a warning:
    the rollback itself succeeded."""
    started = time.monotonic()
    secured = backup_step.secure_replaced(session, restored, origin=origin)
    record.timings["safety backup (after serving)"] = round(time.monotonic() - started, 3)
    record.safety_backup = secured.safety_backup_id
    record.kept_database = secured.kept_database
    if secured.safety_error:
        record.notes.append(f"warning: {secured.safety_error}")
    elif secured.safety_backup_id:
        record.notes.append(
            f"safety backup {secured.safety_backup_id} of the replaced database verified; "
            f"{restored.kept_database} dropped"
        )
    session.history.save_release(record)


def restore_needed(*, restore_db: bool, revision_changed: bool, newer: list[ReleaseRecord]) -> bool:
    """The rule of this module's docstring: asked for, or the revision changed and one of the
    newer releases declared its migrations not expand-only."""
    return restore_db or (revision_changed and any(r.expand_only is False for r in newer))


def _choose(
    session: EnvSession, serving: list[ReleaseRecord], current: ReleaseRecord, to: str | None
) -> tuple[RollbackTarget, list[ReleaseRecord]]:
    """The release to go back to, and the deploys after it up to `current` (oldest first)."""
    earlier = [r for r in serving if r.id != current.id]
    chosen: ReleaseRecord | None = None
    if to is not None:
        matches = [r for r in earlier if to in (r.id, r.version, r.image)]
        if not matches:
            known = ", ".join(f"{r.id} ({r.version or r.image})" for r in earlier) or "none"
            raise UsageError(
                f'no earlier release "{to}" in environment {current.environment}',
                untouched="nothing was done",
                hint=f"name one of: {known}",
            )
        chosen = matches[-1]
    else:
        different = [r for r in earlier if r.image_id != current.image_id]
        chosen = different[-1] if different else None
    if chosen is None:
        # Before the first deploy deploytools recorded, the image that ran then (a stack
        # brought up by hand): the first deploy remembers it as its previous image.
        first = next(
            (r for r in [*serving, current] if r.kind == "deploy" and r.previous_image), None
        )
        image_id = (
            _image_or_none(session, first.previous_image)
            if first and first.previous_image
            else None
        )
        if first is None or first.previous_image is None or image_id == current.image_id:
            raise UsageError(
                f"environment {current.environment} has no earlier release to roll back to",
                untouched="nothing was done",
                hint=f"`deploytools history --env {current.environment}`",
            )
        newer = [r for r in serving if r.kind == "deploy"]
        if not current.serving:
            newer.append(current)
        target = RollbackTarget(first.previous_image, image_id or "", None, None)
        return target, _dedupe(newer)
    newer = [r for r in serving if r.id > chosen.id and r.kind == "deploy"]
    if not current.serving:
        newer.append(current)
    image = app_service.keep_ref(session, chosen)
    return RollbackTarget(image, chosen.image_id, chosen.version, chosen.id), _dedupe(newer)


def _dedupe(records: list[ReleaseRecord]) -> list[ReleaseRecord]:
    seen: set[str] = set()
    out = []
    for r in sorted(records, key=lambda r: r.id):
        if r.id not in seen:
            seen.add(r.id)
            out.append(r)
    return out


def _image_or_none(session: EnvSession, ref: str) -> str | None:
    try:
        return session.target.engine.image(ref).id
    except EngineError:  # gone; compose will say so when it starts
        return None
