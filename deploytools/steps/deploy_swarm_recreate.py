"""Runbook step 5 on a Swarm environment with the recreate strategy: how a release whose
migrations are not expand-only (a column dropped or renamed) ships on Swarm.

    take the lock -> a verified backup -> the maintenance window announced (production and
    every environment whose deploys need approval, maintenance.py) -> the app service scaled
    to 0, waited until no task of the old release runs -> the migration once, as a job on the
    stack's network -> the service's spec written with the new image at its replicas, waited
    until they run with a deadline, each new task smoke-checked as in the rolling update
    -> record

The old release never reads the contracted schema: it stopped before the migration. The
outage runs from the stop until the new tasks are healthy, as a recreate on one engine, and is
timed in the same phases (stop, migrate, start, healthy), so the next announcement says how
long the last one was down.

On failure: a backup or announcement that fails stops the deploy before anything stopped; a
stop or a migration that fails (the schema is unchanged: one transaction) brings the old image
back at its replicas; new tasks that fail, a smoke check that fails, or the deadline: the new
tasks are stopped, the data restored from the pre-deploy backup when the migration changed the
schema and the release declared it not expand-only (deploy_swarm's rule, rollback.py's), and
the old image started again at its replicas, watched the same way. The error says what was left.
"""

from __future__ import annotations

import contextlib

from deploytools import proxy_settings, proxy_swarm
from deploytools.database import Database
from deploytools.engine.swarm_update import SdkServiceApi, ServiceUpdate, UpdateFailed
from deploytools.errors import CheckFailed, DeadlineExceeded, DeployError
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.proxy_settings import ProxySettings
from deploytools.session import EnvSession
from deploytools.steps import app_service, deploy_strategy, deploy_swarm, maintenance
from deploytools.steps import backup as backup_step
from deploytools.steps import migrate as migrate_step
from deploytools.store.records import ReleaseRecord, utc_now, who

STRATEGY = "swarm-recreate"


def deploy(
    session: EnvSession,
    platform: SwarmPlatform,
    info: migrate_step.ImageInfo,
    *,
    choice: deploy_strategy.StrategyChoice,
    no_backup_check: bool,
    approved_by: str | None = None,
    window_note: str | None = None,
) -> deploy_swarm.SwarmDeployResult:
    """Deploy `info` to a Swarm environment whose app service exists, with the recreate
    strategy (see the module's docstring); under the deploy lock, taken by the caller.

    :param choice: the strategy chosen and why (recorded, and said in the announcement).
    :param no_backup_check: go on without a verified backup (recorded).
    :param approved_by: who approved it, recorded.
    :param window_note: why it runs outside the deploy windows, recorded.
    """
    history = session.history
    env = platform.name
    app = platform.config.project.app_service
    service = platform.swarm.service(platform.service_name(app))
    current = history.current_release()
    running = service is not None and service.image == info.ref
    if running and deploy_swarm.all_run(platform, info.ref):
        return deploy_swarm.SwarmDeployResult(
            env, False, f"{info.ref} already runs in {env}; nothing to do", current
        )
    replicas = deploy_swarm.replicas(platform)
    records = history.releases()
    record = ReleaseRecord(
        id=history.next_release_id(),
        environment=env,
        kind="deploy",
        who=who(),
        started=utc_now(),
        image=info.ref,
        image_id=info.id,
        version=info.version,
        strategy=STRATEGY,
        strategy_asked=choice.asked,
        strategy_reason=choice.reason,
        previous=current.id if current else None,
        previous_image=service.image if service is not None else None,
        revision_before=Database.of(platform).revision(),
        expand_only=info.expand_only,
        no_backup_check=no_backup_check,
        approved_by=approved_by,
        outside_window=window_note,
    )
    history.save_release(record)
    phases = app_service.Phases(session, record)
    nodes_before = platform.nodes()
    try:
        with phases.phase("backup"):
            record.backup_id = backup_step.ensure_pre_deploy(session, current, no_backup_check)
        if maintenance.announced_in(platform.config, env):
            expected = maintenance.expected_downtime(records)
            record.maintenance = maintenance.announce(session.ctx, record, expected)
            history.save_release(record)
        resolved = proxy_settings.resolve(platform.config, platform.environment)
        with phases.phase("proxy"):
            # Before the stop: the smoke check of the new tasks is asked from it.
            proxy_swarm.ensure_running(
                platform.manager,
                deploy_swarm.proxy_spec(platform, resolved),
                timeout_s=platform.config.deploy.health_timeout_s,
            )
    except DeployError as error:
        serving = f"nothing was stopped: {record.previous_image} serves"
        _fail(session, record, error, serving=serving)
        raise
    except BaseException as error:
        _interrupted(session, record, error)
        raise
    migrated = False
    try:
        with phases.phase("stop"):
            platform.stop([app], what=f"stopping {app} for the recreate of {info.ref}")
        with phases.phase("migrate"):
            try:
                result = migrate_step.run_in(
                    session, image=info.ref, no_backup_check=record.no_backup_check
                )
            except DeployError as error:
                record.failure_output = migrate_step.output_tail(error.facts, platform.config)
                raise app_service.MigrationFailed(
                    error.message, untouched=error.untouched, hint=error.hint, facts=error.facts
                ) from error
            migrated = True
            record.revision_after = result.revision_after
        with phases.phase("start"):
            update = start(platform, info.ref, replicas)
        with phases.phase("healthy"):
            watch(session, platform, update, resolved, replicas)
    except DeployError as error:
        record.notes.extend(deploy_swarm.node_notes(platform, nodes_before))
        _recover(session, platform, record, error, resolved, replicas, migrated=migrated)
        raise
    except BaseException as error:
        _interrupted(session, record, error)
        raise
    record.notes.extend(deploy_swarm.node_notes(platform, nodes_before))
    record.outcome, record.finished = "succeeded", utc_now()
    history.save_release(record)
    return deploy_swarm.SwarmDeployResult(
        env, True, f"{info.ref} deployed to {env} as release {record.id} (recreate)", record
    )


def start(platform: SwarmPlatform, image: str, replicas: int) -> ServiceUpdate:
    """The app service's spec written with `image` at `replicas` (it is at 0): Swarm starts
    that many new tasks at once; nothing of the old release is left to replace."""
    app = platform.config.project.app_service
    update = ServiceUpdate(
        SdkServiceApi(platform.manager), platform.service_name(app), network=platform.network()
    )
    update.start(image, deploy_swarm.policy(platform), replicas=replicas)
    return update


def watch(
    session: EnvSession,
    platform: SwarmPlatform,
    update: ServiceUpdate,
    resolved: ProxySettings,
    replicas: int,
) -> None:
    """Until `replicas` tasks of the update's image run, each smoke-checked from the proxy;
    the first that fails ends it, and so does `health_timeout_s` (they start together)."""
    gateway = proxy_swarm.ensure_running(
        platform.manager,
        deploy_swarm.proxy_spec(platform, resolved),
        timeout_s=platform.config.deploy.health_timeout_s,
    )
    try:
        update.watch(
            replicas=replicas,
            timeout_s=platform.config.deploy.health_timeout_s,
            check=lambda task: deploy_swarm.smoke(gateway, task, resolved),
            on_progress=lambda p: session.progress(f"start: {p.describe()}"),
            end_on_failed_task=True,
        )
    except UpdateFailed as failed:
        raise (DeadlineExceeded if failed.timed_out else CheckFailed)(
            failed.message,
            hint=f"the tasks' errors: `docker service ps {update.service}`",
        ) from failed


def _recover(
    session: EnvSession,
    platform: SwarmPlatform,
    record: ReleaseRecord,
    error: DeployError,
    resolved: ProxySettings,
    replicas: int,
    *,
    migrated: bool,
) -> None:
    """After the stop: the new tasks stopped, the data restored when the rule asks, the old
    image back at its replicas; the record and the error say what serves."""
    app = platform.config.project.app_service
    with contextlib.suppress(DeployError):
        record.revision_after = Database.of(platform).revision()
    left: list[str] = []
    restored = None
    try:
        platform.stop([app], what=f"stopping the tasks of {record.image}")
        if migrated:
            restored = deploy_swarm.restore_if_needed(session, record)
        if restored:
            left.append(f"database restored from {restored}")
        elif migrated and record.revision_after != record.revision_before:
            left.append(
                f"the database keeps the migrated schema ({record.revision_after}): the "
                "release did not declare its migrations not expand-only"
            )
        else:
            left.append("the schema is unchanged")
        old = record.previous_image or ""
        watch(session, platform, start(platform, old, replicas), resolved, replicas)
        left.insert(0, f"{old} serves again at {replicas} replicas")
        # A release that never migrated was not deployed (as a failed migration on one engine).
        record.outcome = "rolled-back" if migrated else "failed"
    except DeployError as again:
        left.insert(0, f"the old release did NOT come back: {again.message}")
        record.outcome = "failed"
    serving = "; ".join(left)
    record.finished, record.error = utc_now(), error.message
    record.notes.append(serving)
    session.history.save_release(record)
    error.message = f"deploy of {record.image} to {record.environment} failed: {error.message}"
    error.untouched = serving
    error.facts["release"] = record.id


def _fail(session: EnvSession, record: ReleaseRecord, error: DeployError, *, serving: str) -> None:
    """Nothing was stopped yet: the record and the error say so."""
    record.outcome, record.finished, record.error = "failed", utc_now(), error.message
    record.notes.append(serving)
    session.history.save_release(record)
    error.message = f"deploy of {record.image} to {record.environment} failed: {error.message}"
    error.untouched = f"{error.untouched}; {serving}" if error.untouched else serving
    error.facts["release"] = record.id


def _interrupted(session: EnvSession, record: ReleaseRecord, error: BaseException) -> None:
    record.outcome, record.finished = "interrupted", utc_now()
    record.error = f"{type(error).__name__}: {error}"
    session.history.save_release(record)
