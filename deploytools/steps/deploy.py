"""Runbook step 5, "Production Deployment", in the runbook's order:

    take the lock -> a verified backup from before this deploy (taken if missing) -> stop the old
    app -> migrate -> start the new one -> wait until healthy (with a deadline) -> record

Every failure path leaves a serving release and a record that says what happened: a failed
migration starts the old release again on the unchanged schema; a new release that never
becomes healthy is rolled back automatically (see rollback.py for when the database is restored).
How the old app is replaced by the new one is a Strategy: `recreate`, or `rolling` (zero
downtime, behind the proxy); `auto`, the default, picks rolling when the release is expand-only
and the proxy can switch (deploy_strategy.py), and a recreate in production announces its
maintenance window before anything stops (maintenance.py). An environment with
`requires_approval` is deployed only with a person's approval (`confirm`) or one already given
(`approved_by`: --yes, the pipeline's gate).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from deploytools import proxy
from deploytools.context import StepContext
from deploytools.database import Database
from deploytools.deploy_windows import check_window
from deploytools.errors import (
    ApprovalRequired,
    CheckFailed,
    DeployCancelled,
    DeployError,
    UsageError,
)
from deploytools.session import EnvSession, open_environment
from deploytools.steps import backup as backup_step
from deploytools.steps import (
    deploy_cancel,
    deploy_rolling,
    deploy_strategy,
    deploy_swarm,
    deploy_swarm_recreate,
    maintenance,
    watch_keep,
)
from deploytools.steps import migrate as migrate_step
from deploytools.steps import rollback as rollback_step
from deploytools.steps.app_service import (
    MigrationFailed,
    OldReleaseServing,
    Phases,
    RunningApp,
    ensure_database,
    keep_images,
    keep_ref,
    running_app,
    start_app,
    stop_app,
    wait_app_healthy,
)
from deploytools.steps.deploy_rolling import RollingStrategy
from deploytools.store.records import ReleaseRecord, utc_now, who


@dataclass(frozen=True)
class DeployResult:
    environment: str
    changed: bool
    message: str
    record: ReleaseRecord | None


class Strategy(Protocol):
    """How the running app is replaced by the new image, migrations included."""

    name: str

    def admit(self, session: EnvSession, info: migrate_step.ImageInfo) -> None:
        """Refuse (UsageError) before anything is touched when this release may not be
        deployed this way."""

    def replace(self, session: EnvSession, record: ReleaseRecord, phases: Phases) -> None:
        """Stop, migrate, start and wait: on return the new release is healthy. Raise
        MigrationFailed when the migration failed (the old app may be started again), any
        other DeployError when the new release did not come up."""


class RecreateStrategy:
    """Stop the old app, migrate, start the new one: downtime from stop to healthy."""

    name = "recreate"

    def admit(self, session: EnvSession, info: migrate_step.ImageInfo) -> None:
        return None

    def replace(self, session: EnvSession, record: ReleaseRecord, phases: Phases) -> None:
        # A cancel from the stop to the new release's health leaves a release serving (the
        # old one's same containers before the migration committed, else the new one).
        with deploy_cancel.recovered(session, record, phases):
            with phases.phase("stop"):
                stop_app(session)
            with phases.phase("migrate"):
                try:
                    result = migrate_step.run_in(
                        session, image=record.image, no_backup_check=record.no_backup_check
                    )
                except DeployError as error:
                    raise MigrationFailed(
                        error.message, untouched=error.untouched, hint=error.hint, facts=error.facts
                    ) from error
                record.revision_after = result.revision_after
            with phases.phase("start"):
                start_app(session, record.image)
            with phases.phase("healthy"):
                wait_app_healthy(session)


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "recreate": RecreateStrategy,
    "rolling": RollingStrategy,
}
#: What `strategy` may be: a strategy's name, or "auto" (deploy_strategy.choose).
STRATEGY_NAMES = (deploy_strategy.AUTO, *sorted(STRATEGIES))

#: Asked, with what is about to happen, before a deploy that needs approval; True goes on.
Confirm = Callable[[str], bool]


def run(
    ctx: StepContext,
    *,
    environment: str,
    image: str,
    strategy: str = deploy_strategy.AUTO,
    lock_wait_s: float = 0.0,
    no_backup_check: bool = False,
    outside_window: str | None = None,
    confirm: Confirm | None = None,
    approved_by: str | None = None,
) -> DeployResult:
    """Deploy `image` to `environment`.

    :param environment: the environment's name.
    :param image: the release image (on the target's engine already).
    :param strategy: how the old app is replaced: "auto" (rolling when the image declares its
        migrations expand-only and the proxy can switch, else recreate), "recreate", or
        "rolling" (refused, before anything is touched, when it cannot be done).
    :param lock_wait_s: how long to wait for another deploy's lock before failing.
    :param no_backup_check: migrate without a verified backup (recorded); one is still taken
        when possible, this only allows going on without it.
    :param outside_window: the reason to deploy outside the environment's deploy windows
        (recorded); without it such a deploy raises OutsideWindow before anything is touched.
    :param confirm: for an environment with `requires_approval`: asked, with the image, the
        strategy chosen and why, before anything is deployed; False cancels (ApprovalRequired).
    :param approved_by: the approval already given (--yes, the pipeline's gate), by whom; then
        `confirm` is not asked. With neither, such an environment raises ApprovalRequired
        before anything is touched.
    """
    window_note = check_window(
        ctx.config, environment, datetime.now(UTC), outside_window=outside_window
    )
    if strategy not in STRATEGY_NAMES:
        raise UsageError(
            f'unknown deploy strategy "{strategy}"',
            untouched="nothing was done",
            hint="use one of: " + ", ".join(STRATEGY_NAMES),
        )
    guarded = ctx.config.environment(environment).requires_approval
    if guarded and approved_by is None and confirm is None:
        raise ApprovalRequired(
            f"deploys to {environment} need a person's approval (requires_approval in "
            "deploy.toml) and nobody can be asked (no terminal, or --json)",
            untouched=f"nothing was touched: {environment} runs what it ran",
            hint="run it on a terminal to be asked, or add --yes to approve it yourself",
            facts={"environment": environment},
        )
    if ctx.config.environment(environment).is_swarm:
        # Swarm rolls the tasks (an expand-only release) or deploytools stops, migrates and
        # starts them (recreate); deploytools watches, checks and rolls back (deploy_swarm.py).
        asked = guarded and approved_by is None and confirm is not None
        question = (
            f"Deploy {image} to {environment} (Swarm; strategy {strategy}: a release not "
            "expand-only stops the app from before its migration until it is healthy)"
        )
        if asked and confirm is not None:
            if not confirm(question):
                raise ApprovalRequired(
                    f"the deploy of {image} to {environment} was not approved",
                    untouched=f"nothing was deployed: {environment} runs what it ran",
                    facts={"declined": True},
                )
            approved_by = who()
        done = deploy_swarm.run(
            ctx,
            environment=environment,
            image=image,
            recreate=deploy_swarm_recreate.deploy,
            strategy=strategy,
            lock_wait_s=lock_wait_s,
            no_backup_check=no_backup_check,
            approved_by=approved_by if guarded else None,
            window_note=window_note,
        )
        return DeployResult(done.environment, done.changed, done.message, done.record)
    # The database is started (a new environment) before the store is opened: the store's
    # helper then runs the database's image, whose pg_restore verifies the pre-deploy backup.
    with open_environment(ctx, environment, with_database=True) as session:
        info = migrate_step.image_info(session.target.engine, image)
        choice = deploy_strategy.choose(
            strategy,
            info,
            lambda: deploy_rolling.proxy_refusal(session),
            serving=running_app(session.target) is not None,
        )
        replacer = STRATEGIES[choice.strategy]()
        if choice.asked != deploy_strategy.AUTO:
            # auto chose by the same rules the strategy admits by.
            replacer.admit(session, info)
        session.progress(f"deploy: strategy {choice.summary}")
        if guarded and approved_by is None and confirm is not None:
            approved_by = _approval(session, info, choice, confirm)
        ttl = ctx.config.deploy.lock_ttl_s
        with session.history.locked("deploy", ttl_s=ttl, wait_s=lock_wait_s) as lock:
            session.lock = lock
            return _deploy(
                session,
                info,
                replacer,
                choice=choice,
                approved_by=approved_by if guarded else None,
                no_backup_check=no_backup_check,
                window_note=window_note,
            )


def _approval(
    session: EnvSession,
    info: migrate_step.ImageInfo,
    choice: deploy_strategy.StrategyChoice,
    confirm: Confirm,
) -> str | None:
    """Ask `confirm` what is about to happen; who approved. Not asked (None) when the image
    already serves healthy: the deploy then does nothing."""
    env = session.target.name
    running = running_app(session.target)
    if running is not None and running.image_id == info.id and running.healthy:
        return None
    question = (
        f"Deploy {info.ref} (version {info.version or 'not labelled'}) to {env}, replacing "
        f"{running.image if running else 'nothing (no app runs there)'}, with the "
        f"{choice.strategy} strategy ({choice.reason})"
    )
    if choice.strategy == deploy_strategy.RECREATE and running is not None:
        expected = maintenance.expected_downtime(session.history.releases())
        question += (
            f"; the app is down from its stop until the new release is healthy, {expected.text}"
        )
    if not confirm(question + f". {env} requires approval"):
        raise ApprovalRequired(
            f"the deploy of {info.ref} to {env} was not approved",
            untouched=f"nothing was deployed: {env} runs what it ran",
            hint="run it again to be asked again",
            facts={"declined": True},
        )
    return who()


def _deploy(
    session: EnvSession,
    info: migrate_step.ImageInfo,
    replacer: Strategy,
    *,
    no_backup_check: bool,
    window_note: str | None = None,
    choice: deploy_strategy.StrategyChoice | None = None,
    approved_by: str | None = None,
) -> DeployResult:
    if choice is None:  # the strategy as asked
        choice = deploy_strategy.choose(replacer.name, info, lambda: None, serving=True)
    history = session.history
    env = session.target.name
    records = history.releases()
    current = history.current_release()
    running = running_app(session.target)

    # Idempotence: the image already serves, healthy.
    if running is not None and running.image_id == info.id and running.healthy:
        unfinished = [r for r in records if r.outcome == "in-progress"]
        if not unfinished and records and records[-1].outcome == "interrupted":
            # The last deploy was cancelled while its new release was starting; it came up.
            unfinished = records[-1:]
        if unfinished and unfinished[-1].image_id == info.id:
            # A deploy of this image was interrupted after its app came up: finish its record.
            record = unfinished[-1]
            record.revision_after = Database.of(session.target).revision()
            record.outcome, record.finished = "succeeded", utc_now()
            record.notes.append("completed by a re-run after an interruption")
            history.save_release(record)
            return DeployResult(env, True, f"finished interrupted deploy {record.id}", record)
        return DeployResult(
            env, False, f"{info.ref} already runs healthy in {env}; nothing to do", current
        )
    for stale in records:
        if stale.outcome == "in-progress":
            stale.outcome, stale.finished = "interrupted", utc_now()
            stale.notes.append("its deploytools process ended before it finished")
            history.save_release(stale)
    # A new deploy replaces the container kept for a rollback by switch: only the release
    # immediately before the serving one is ever kept (steps/watch_keep.py).
    watch_keep.retire_all(session, records, why="a new deploy replaces it")

    ensure_database(session)
    # deploytools' own proxy is started unless the app publishes its port itself (a stack
    # not put behind it yet: `deploytools proxy start` on another port adopts it).
    proxy.ensure_running(
        session.target,
        timeout_s=session.ctx.config.deploy.health_timeout_s,
        unless_app_publishes=True,
    )
    db = Database.of(session.target)
    record = ReleaseRecord(
        id=history.next_release_id(),
        environment=env,
        kind="deploy",
        who=who(),
        started=utc_now(),
        image=info.ref,
        image_id=info.id,
        version=info.version,
        strategy=replacer.name,
        strategy_asked=choice.asked,
        strategy_reason=choice.reason,
        approved_by=approved_by,
        previous=current.id if current else None,
        previous_image=(running.image if running else None)
        or (keep_ref(session, current) if current else None),
        revision_before=db.revision(),
        expand_only=info.expand_only,
        no_backup_check=no_backup_check,
        outside_window=window_note,
    )
    history.save_release(record)
    phases = Phases(session, record)
    try:
        with phases.phase("backup"):
            record.backup_id = backup_step.ensure_pre_deploy(session, current, no_backup_check)
        _announce_window(session, record, running, records)
    except DeployError as error:
        _fail_before_anything_changed(session, record, error)
        raise
    except BaseException as error:
        record.outcome, record.finished = "interrupted", utc_now()
        record.error = f"{type(error).__name__}: {error}"
        history.save_release(record)
        raise
    try:
        replacer.replace(session, record, phases)
    except MigrationFailed as error:
        _recover_after_failed_migration(session, record, error)
        raise
    except DeployCancelled:
        raise  # deploy_cancel saved the record: what the cancel left serving
    except OldReleaseServing as error:
        record.outcome, record.finished, record.error = "failed", utc_now(), error.message
        record.notes.append(error.untouched or "the old release kept serving")
        history.save_release(record)
        error.facts["release"] = record.id
        raise
    except DeployError as error:
        _roll_back_unhealthy(session, record, error)
        raise
    except BaseException as error:
        # Interrupted (Ctrl-C) or a bug: the record says so; a re-run finishes or rolls back.
        record.outcome, record.finished = "interrupted", utc_now()
        record.error = f"{type(error).__name__}: {error}"
        history.save_release(record)
        raise
    record.outcome, record.finished = "succeeded", utc_now()
    history.save_release(record)
    # The records as read at the start (the lock kept them ours) and this one: no second read
    # at the end of the step, where a rolling deploy's cut-over still runs.
    keep_images(session, record, [*records, record])
    return DeployResult(env, True, f"{info.ref} deployed to {env} as release {record.id}", record)


def _announce_window(
    session: EnvSession,
    record: ReleaseRecord,
    running: RunningApp | None,
    records: list[ReleaseRecord],
) -> None:
    """A recreate that stops a serving app in production announces its maintenance window
    first (maintenance.py); a required notification that fails stops the deploy here, before
    anything stopped."""
    config = session.ctx.config
    if record.strategy != deploy_strategy.RECREATE or running is None:
        return
    if not maintenance.announced_in(config, record.environment):
        return
    expected = maintenance.expected_downtime(records)
    record.maintenance = maintenance.announce(session.ctx, record, expected)
    session.history.save_release(record)


def _serving_before(record: ReleaseRecord) -> str:
    """What served before this deploy, which it has not touched yet."""
    if record.previous_image:
        return f"the running release ({record.previous_image}) was not stopped and still serves"
    return f"no app ran in {record.environment} before this deploy, and none was started"


def _fail_before_anything_changed(
    session: EnvSession, record: ReleaseRecord, error: DeployError
) -> None:
    """The pre-deploy backup failed: nothing was stopped, migrated or started. Record it, and
    say so (no rollback: there is nothing to roll back)."""
    untouched = f"nothing was deployed; {_serving_before(record)}"
    record.outcome, record.finished, record.error = "failed", utc_now(), error.message
    record.notes.append(untouched)
    session.history.save_release(record)
    error.message = f"deploy of {record.image} to {record.environment} failed: {error.message}"
    error.untouched = f"{error.untouched}; {untouched}" if error.untouched else untouched
    error.facts["release"] = record.id


def _recover_after_failed_migration(
    session: EnvSession, record: ReleaseRecord, error: DeployError
) -> None:
    """The schema is unchanged (one transaction): start the old release again."""
    record.revision_after = error.facts.get("revision_after", record.revision_before)
    serving = "nothing (there was no earlier release)"
    if record.previous_image:
        try:
            start_app(session, record.previous_image)
            wait_app_healthy(session)
            serving = f"the previous release ({record.previous_image}) serves again"
        except DeployError as again:
            serving = f"the previous release did NOT come back: {again.message}"
    record.outcome, record.finished, record.error = "failed", utc_now(), error.message
    record.failure_output = migrate_step.output_tail(error.facts, session.ctx.config)
    record.notes.append(serving)
    session.history.save_release(record)
    error.message = f"deploy of {record.image} to {record.environment} failed: {error.message}"
    error.untouched = f"{error.untouched}; {serving}" if error.untouched else serving
    error.facts["release"] = record.id


def _roll_back_unhealthy(session: EnvSession, record: ReleaseRecord, error: DeployError) -> None:
    """The new release did not come up: go back to the previous one (restoring the database
    when the rollback rule says so) and record it."""
    record.finished, record.error = utc_now(), error.message
    with contextlib.suppress(DeployError):
        record.revision_after = Database.of(session.target).revision()
    if not record.previous_image:
        record.outcome = "failed"
        session.history.save_release(record)
        error.untouched = (
            f"there was no earlier release to roll back to (this was the first deploy to "
            f"{record.environment}): nothing serves there yet; the new release's containers "
            "are left as they are, for their logs"
        )
        return
    record.outcome = "rolled-back"
    session.history.save_release(record)
    try:
        back = rollback_step.roll_back_in(session, failed=record, reason="unhealthy release")
    except DeployError as again:
        error.message = (
            f"{record.image} did not become healthy in {record.environment} ({error.message}) "
            f"and the automatic rollback failed too: {again.message}"
        )
        error.untouched = again.untouched
        error.hint = again.hint
        return
    record.notes.append(f"rolled back automatically by release {back.id}")
    session.history.save_release(record)
    raise CheckFailed(
        f"{record.image} did not become healthy in {record.environment}: {error.message}",
        untouched=f"rolled back automatically to {back.image} (release {back.id}), healthy"
        + (f"; database restored from {back.restored_backup}" if back.restored_backup else ""),
        hint="read the new release's logs; fix it and release again",
        facts={"release": record.id, "rollback": back.id},
    ) from error
