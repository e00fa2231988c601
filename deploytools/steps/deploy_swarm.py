"""Runbook step 5 on a Swarm environment: the release rolled out by Swarm, watched by
deploytools, behind deploytools' proxy.

    take the lock -> a verified backup (as a Compose deploy takes it) -> the migration once, as
    a job on the stack's network -> the proxy on the manager (proxy_swarm) -> Swarm's rolling
    update of the app service (start-first, parallelism, monitor, failure action pause),
    watched batch by batch: each new task, once running, gets deploytools' smoke check of its
    health route (asked from the proxy, at the task's address) before the next batch starts
    -> record

On failure (a task that fails, a smoke check that fails, Swarm pausing the update, or the
deadline) deploytools asks Swarm to roll the update back and waits for the old tasks; when the
migration changed the schema and the release did not declare it expand-only, the database is
restored from the pre-deploy backup, as rollback.py does. A first deploy (no app service yet)
deploys the stack with the release's image after the migration.

A node that went down, was drained or left the swarm during the release is named in the
record's notes (and in the error, when the release failed): Swarm pauses an update whose new
task a drain stopped, and keeps "updating" one whose new task sits on a node that went down,
which the watch ends at once (swarm_update); either way the update is rolled back.

The rollback step's Swarm path (`roll_back`): an update to the recorded earlier release's
image, watched the same way, the data restored by rollback.py's rule.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

from deploytools import proxy, proxy_settings, proxy_swarm
from deploytools.context import StepContext
from deploytools.database import Database
from deploytools.engine.client import Container
from deploytools.engine.errors import EngineError
from deploytools.engine.swarm import NodeInfo, TaskState
from deploytools.engine.swarm_update import (
    SdkServiceApi,
    ServiceUpdate,
    UpdateFailed,
    UpdatePolicy,
)
from deploytools.errors import CheckFailed, DeadlineExceeded, DeployError, UsageError
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.proxy_settings import ProxySettings
from deploytools.session import EnvSession, open_environment
from deploytools.steps import app_service, deploy_strategy
from deploytools.steps import backup as backup_step
from deploytools.steps import migrate as migrate_step
from deploytools.store.records import ReleaseRecord, utc_now, who

STRATEGY = "swarm-rolling"
#: The least pause between two batches: deploytools' smoke check of a batch's new tasks runs
#: within it (the watch polls every 0.5 s; the check is one request from the proxy).
BATCH_CHECK_S = 2.0
#: The deadline of one smoke check.
SMOKE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SwarmDeployResult:
    environment: str
    changed: bool
    message: str
    record: ReleaseRecord | None


class Recreate(Protocol):
    """The Swarm recreate strategy's step (deploy_swarm_recreate.deploy)."""

    def __call__(
        self,
        session: EnvSession,
        platform: SwarmPlatform,
        info: migrate_step.ImageInfo,
        *,
        choice: deploy_strategy.StrategyChoice,
        no_backup_check: bool,
        approved_by: str | None = None,
        window_note: str | None = None,
    ) -> SwarmDeployResult: ...


def swarm_platform(session: EnvSession) -> SwarmPlatform:
    platform = session.platform
    if not isinstance(platform, SwarmPlatform):
        raise UsageError(
            f"environment {platform.name} is not a Swarm environment",
            untouched="nothing was done",
        )
    return platform


def proxy_spec(platform: SwarmPlatform, resolved: ProxySettings) -> proxy_swarm.SwarmProxySpec:
    app = platform.config.project.app_service
    return proxy_swarm.SwarmProxySpec(
        stack=platform.stack,
        service=platform.service_name(app),
        network=platform.network(),
        image=resolved.image,
        app_port=resolved.app_port,
        health=resolved.health,
        publish=resolved.publish,
    )


def policy(platform: SwarmPlatform) -> UpdatePolicy:
    settings = platform.settings
    return UpdatePolicy(
        parallelism=settings.update_parallelism,
        delay_s=max(settings.update_delay_s, BATCH_CHECK_S),
        monitor_s=settings.update_monitor_s,
    )


def replicas(platform: SwarmPlatform) -> int:
    found = platform.swarm.service(platform.service_name(platform.config.project.app_service))
    return platform.settings.replicas or (found.replicas if found and found.replicas else 1)


def refuse_unless_expand_only(
    platform: SwarmPlatform, info: migrate_step.ImageInfo, *, serving: bool
) -> None:
    """During Swarm's rolling update the old release's tasks serve from the migrated schema,
    which only an expand-only migration leaves readable to them: a release not declared
    expand-only is refused while a release serves (a first deploy has no old tasks). `auto`
    never gets here with one (it recreates, deploy_swarm_recreate.py); an explicit
    `--strategy rolling` does, and is refused rather than turned into an outage."""
    if not serving or info.expand_only is True:
        return
    declared = "declared NOT expand-only" if info.expand_only is False else "not labelled"
    raise UsageError(
        f"{info.ref} cannot be deployed to the Swarm environment {platform.name}: its "
        f"migrations are {declared} (label {migrate_step.EXPAND_ONLY_LABEL}), and during the "
        "rolling update the running release would serve from the migrated schema",
        untouched=f"nothing was done: {platform.name} runs what it ran",
        hint="deploy it with --strategy recreate (or auto): the app stops for the migration; "
        "or split the change into expand-only releases (docs/migrations.md)",
    )


def run(
    ctx: StepContext,
    *,
    environment: str,
    image: str,
    recreate: Recreate,
    strategy: str = deploy_strategy.AUTO,
    lock_wait_s: float = 0.0,
    no_backup_check: bool = False,
    approved_by: str | None = None,
    window_note: str | None = None,
) -> SwarmDeployResult:
    """Deploy `image` to the Swarm environment `environment` (see the module's docstring).

    :param image: the release image, on every node's engine already.
    :param recreate: the recreate path (deploy_swarm_recreate.deploy, which builds on this
        module), run under the lock when the strategy chosen is recreate.
    :param strategy: "auto" (rolling for an expand-only release, else recreate), "rolling"
        or "recreate" (deploy_strategy.choose_on_swarm).
    :param lock_wait_s: how long to wait for another deploy's lock.
    :param no_backup_check: go on without a verified backup (recorded).
    :param approved_by: who approved it (an environment with `requires_approval`), recorded.
    :param window_note: why it runs outside the deploy windows, recorded.
    """
    with open_environment(ctx, environment, with_database=True) as session:
        platform = swarm_platform(session)
        info = migrate_step.release_image_info(platform, image, progress=ctx.progress)
        app = platform.service_name(platform.config.project.app_service)
        choice = deploy_strategy.choose_on_swarm(
            strategy, info, serving=platform.swarm.service(app) is not None
        )
        session.progress(f"deploy: strategy {choice.summary}")
        ttl = ctx.config.deploy.lock_ttl_s
        with session.history.locked("deploy", ttl_s=ttl, wait_s=lock_wait_s) as lock:
            session.lock = lock
            if choice.strategy == deploy_strategy.RECREATE:
                return recreate(
                    session,
                    platform,
                    info,
                    choice=choice,
                    no_backup_check=no_backup_check,
                    approved_by=approved_by,
                    window_note=window_note,
                )
            return _deploy(
                session,
                platform,
                info,
                no_backup_check=no_backup_check,
                approved_by=approved_by,
                window_note=window_note,
            )


def _deploy(
    session: EnvSession,
    platform: SwarmPlatform,
    info: migrate_step.ImageInfo,
    *,
    no_backup_check: bool,
    approved_by: str | None = None,
    window_note: str | None = None,
) -> SwarmDeployResult:
    history = session.history
    env = platform.name
    app = platform.config.project.app_service
    service = platform.swarm.service(platform.service_name(app))
    current = history.current_release()
    if service is not None and service.image == info.ref and all_run(platform, info.ref):
        return SwarmDeployResult(
            env, False, f"{info.ref} already runs in {env}; nothing to do", current
        )
    refuse_unless_expand_only(platform, info, serving=service is not None)
    db = Database.of(platform)
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
        previous=current.id if current else None,
        previous_image=service.image if service is not None else None,
        revision_before=db.revision(),
        expand_only=info.expand_only,
        no_backup_check=no_backup_check,
        approved_by=approved_by,
        outside_window=window_note,
    )
    history.save_release(record)
    phases = app_service.Phases(session, record)
    nodes_before = platform.nodes()
    update_started = False
    try:
        with phases.phase("backup"):
            record.backup_id = backup_step.ensure_pre_deploy(session, current, no_backup_check)
        with phases.phase("migrate"):
            try:
                migrated = migrate_step.run_in(
                    session, image=info.ref, no_backup_check=record.no_backup_check
                )
            except DeployError as error:
                raise app_service.MigrationFailed(
                    error.message, untouched=error.untouched, hint=error.hint, facts=error.facts
                ) from error
            record.revision_after = migrated.revision_after
        if service is None:
            with phases.phase("stack"):
                image_variable = platform.config.deploy.image_variable
                platform.deploy_stack({image_variable: info.ref}, what=f"deploying {info.ref}")
        resolved = proxy_settings.resolve(platform.config, platform.environment)
        with phases.phase("proxy"):
            gateway = proxy_swarm.ensure_running(
                platform.manager,
                proxy_spec(platform, resolved),
                timeout_s=platform.config.deploy.health_timeout_s,
            )
        update_started = True
        with phases.phase("update"):
            _update(session, platform, gateway, resolved, info.ref, first=service is None)
    except app_service.MigrationFailed as error:
        # The schema is where it was (one transaction) and no task was touched.
        record.outcome, record.finished, record.error = "failed", utc_now(), error.message
        record.failure_output = migrate_step.output_tail(error.facts, platform.config)
        history.save_release(record)
        error.message = f"deploy of {info.ref} to {env} failed: {error.message}"
        serving = (
            f"the running release ({record.previous_image}) was not touched and still serves"
            if record.previous_image
            else "no app ran before this deploy"
        )
        error.untouched = f"{error.untouched}; {serving}" if error.untouched else serving
        error.facts["release"] = record.id
        raise
    except DeployError as error:
        changed = node_notes(platform, nodes_before)
        record.notes.extend(changed)
        unnamed = [n for n in changed if n.split()[1] not in error.message]
        if unnamed:
            error.message = f"{error.message}; meanwhile {'; '.join(unnamed)}"
        if update_started:
            _fail(session, platform, record, error)
        else:
            failed_before_update(session, record, error)
        raise
    except BaseException as error:
        record.outcome, record.finished = "interrupted", utc_now()
        record.error = f"{type(error).__name__}: {error}"
        history.save_release(record)
        raise
    record.notes.extend(node_notes(platform, nodes_before))
    record.outcome, record.finished = "succeeded", utc_now()
    history.save_release(record)
    return SwarmDeployResult(
        env, True, f"{info.ref} deployed to {env} as release {record.id}", record
    )


def node_changes(before: list[NodeInfo], after: list[NodeInfo]) -> list[str]:
    """What happened to the swarm's nodes between two looks, in words ("node <hostname> ...",
    one line each): a node that went down (or another state than ready), one drained or
    paused, one that left the swarm."""
    was = {n.id: n for n in before}
    said: list[str] = []
    for node in after:
        old = was.pop(node.id, None)
        if old is None:
            continue
        if node.state != old.state and node.state != "ready":
            said.append(f"node {node.hostname} went {node.state} during the release")
        if node.availability != old.availability and node.availability != "active":
            done = {"drain": "drained", "pause": "paused"}.get(node.availability, node.availability)
            said.append(f"node {node.hostname} was {done} during the release")
    said.extend(f"node {old.hostname} left the swarm during the release" for old in was.values())
    return said


def node_notes(platform: SwarmPlatform, before: list[NodeInfo]) -> list[str]:
    """`node_changes` since `before`; none when the manager cannot say (the release's own
    outcome matters more than this note)."""
    try:
        return node_changes(before, platform.nodes())
    except (DeployError, EngineError):
        return []


def all_run(platform: SwarmPlatform, image: str) -> bool:
    tasks = platform.tasks(platform.config.project.app_service, desired_state="running")
    return bool(tasks) and all(t.running and t.image == image for t in tasks)


def _update(
    session: EnvSession,
    platform: SwarmPlatform,
    gateway: Container,
    resolved: ProxySettings,
    image: str,
    *,
    first: bool,
) -> None:
    """Swarm's rolling update to `image`, watched; each new task smoke-checked once it runs."""
    app = platform.config.project.app_service
    update = ServiceUpdate(
        SdkServiceApi(platform.manager), platform.service_name(app), network=platform.network()
    )
    if first:
        update.image = image  # the stack was deployed with it: only the watch remains
    else:
        update.start(image, policy(platform))
    timeout_s = platform.config.deploy.health_timeout_s * max(1, replicas(platform))
    try:
        update.watch(
            replicas=replicas(platform),
            timeout_s=timeout_s,
            check=lambda task: smoke(gateway, task, resolved),
            on_progress=lambda p: session.progress(f"update: {p.describe()}"),
        )
    except UpdateFailed as failed:
        raise (DeadlineExceeded if failed.timed_out else CheckFailed)(
            failed.message,
            hint=f"the tasks' errors: `docker service ps {platform.service_name(app)}`",
        ) from failed


def smoke(gateway: Container, task: TaskState, resolved: ProxySettings) -> None:
    """The new task's health route at its address, asked from the proxy: the configured
    answer, or CheckFailed."""
    health = resolved.health
    where = f"task {task.id[:12]} on {task.node or 'its node'}"
    if not task.address:
        raise CheckFailed(f"smoke check of {where} failed: it has no address on the network")
    answer = proxy.ask(
        gateway, task.address, resolved.app_port, health.path, timeout_s=SMOKE_TIMEOUT_S
    )
    problems = health.problems(answer.status, answer.body)
    if problems:
        raise CheckFailed(
            f"smoke check of {where} failed: {health.path} said {answer.status} "
            f"{answer.body[-200:]!r} ({'; '.join(problems)}; want {health.describe()})",
            hint=f"read its logs: docker service logs {task.service}",
        )


def failed_before_update(session: EnvSession, record: ReleaseRecord, error: DeployError) -> None:
    """The deploy failed before the update began (the backup, the stack, the proxy): no task
    was touched, so Swarm is not asked to roll back (its rollback would take the service to its
    previous spec, an older release than the one serving). A migration that ran stays: only an
    expand-only release rolls out while one serves, and the serving one runs on its schema."""
    record.outcome, record.finished, record.error = "failed", utc_now(), error.message
    serving = (
        f"the update never started: {record.previous_image} still serves"
        if record.previous_image
        else "no app ran before this deploy"
    )
    if record.revision_after and record.revision_after != record.revision_before:
        serving += f" (the schema stays at revision {record.revision_after})"
    record.notes.append(serving)
    session.history.save_release(record)
    error.message = f"deploy of {record.image} to {record.environment} failed: {error.message}"
    error.untouched = f"{error.untouched}; {serving}" if error.untouched else serving
    error.facts["release"] = record.id


def _fail(
    session: EnvSession, platform: SwarmPlatform, record: ReleaseRecord, error: DeployError
) -> None:
    """The update failed: Swarm's rollback of it, the data restored when the migration was not
    expand-only, and the record says what serves."""
    record.finished, record.error = utc_now(), error.message
    db = Database.of(platform)
    with contextlib.suppress(DeployError):
        record.revision_after = db.revision()
    if not record.previous_image:
        record.outcome = "failed"
        session.history.save_release(record)
        error.untouched = (
            "this was the first deploy: nothing served before; the new tasks are left as they "
            "are, for their logs"
        )
        return
    app = platform.config.project.app_service
    update = ServiceUpdate(
        SdkServiceApi(platform.manager), platform.service_name(app), network=platform.network()
    )
    serving = f"Swarm rolled the update back: {record.previous_image} serves"
    try:
        update.roll_back()
        update.wait_rolled_back(
            replicas=replicas(platform), timeout_s=platform.config.deploy.health_timeout_s * 3
        )
    except (UpdateFailed, DeployError) as again:
        serving = f"Swarm's rollback of the update did NOT finish: {again}"
    restored = restore_if_needed(session, record)
    record.outcome = "rolled-back" if "NOT" not in serving else "failed"
    record.notes.append(serving + (f"; database restored from {restored}" if restored else ""))
    session.history.save_release(record)
    error.message = f"deploy of {record.image} to {record.environment} failed: {error.message}"
    error.untouched = serving + (f"; database restored from {restored}" if restored else "")
    error.facts["release"] = record.id


def restore_if_needed(session: EnvSession, record: ReleaseRecord) -> str | None:
    """rollback.py's rule: the migration changed the revision and the release did not declare
    it expand-only -> the pre-deploy backup is restored. Which backup, when one was."""
    changed = record.revision_after != record.revision_before
    if not changed or record.expand_only is not False or record.backup_id is None:
        return None
    session.progress(f"rollback: restoring backup {record.backup_id} (not expand-only)")
    backup_step.restore_in(session, record.backup_id, restart_app=True)
    record.restored_backup = record.backup_id
    return record.backup_id


def roll_back(
    session: EnvSession, *, image: str, current: ReleaseRecord, restore_backup: str | None
) -> None:
    """The rollback step's Swarm path: the app service updated to `image` (the earlier
    release's, recorded), watched as a deploy's update, then the data restored from
    `restore_backup` when rollback.py's rule asked for it."""
    platform = swarm_platform(session)
    resolved = proxy_settings.resolve(platform.config, platform.environment)
    gateway = proxy_swarm.ensure_running(
        platform.manager,
        proxy_spec(platform, resolved),
        timeout_s=platform.config.deploy.health_timeout_s,
    )
    _update(session, platform, gateway, resolved, image, first=False)
    if restore_backup is not None:
        backup_step.restore_in(session, restore_backup, restart_app=True)
    session.progress(f"rollback: {image} serves in {platform.name} (from {current.image})")


def rollback_run(
    ctx: StepContext,
    *,
    environment: str,
    to: str | None = None,
    restore_db: bool = False,
    lock_wait_s: float = 0.0,
    reason: str = "manual",
) -> ReleaseRecord:
    """`deploytools rollback` on a Swarm environment: back to the release before the serving
    one (or `to`: a record id, version or image), under the deploy lock; the database restored
    by rollback.py's rule (`restore_db`, or the revision changed and a newer release was not
    expand-only)."""
    with open_environment(ctx, environment) as session:
        platform = swarm_platform(session)
        ttl = ctx.config.deploy.lock_ttl_s
        with session.history.locked("rollback", ttl_s=ttl, wait_s=lock_wait_s) as lock:
            session.lock = lock
            return _rollback(session, platform, to, restore_db, reason)


def _rollback(
    session: EnvSession,
    platform: SwarmPlatform,
    to: str | None,
    restore_db: bool,
    reason: str,
) -> ReleaseRecord:
    history = session.history
    env = platform.name
    serving = [r for r in history.releases() if r.serving]
    if not serving:
        raise UsageError(
            f"environment {env} has no release deployed by deploytools to roll back from",
            untouched="nothing was done",
            hint=f"`deploytools history --env {env}`",
        )
    current = serving[-1]
    earlier = [r for r in serving[:-1] if r.image_id != current.image_id]
    if to is not None:
        earlier = [r for r in serving[:-1] if to in (r.id, r.version, r.image)]
    if earlier:
        target = earlier[-1]
        image, image_id, version = target.image, target.image_id, target.version
        newer = [r for r in serving if r.id > target.id and r.kind == "deploy"]
    elif to is None and current.kind == "deploy" and current.previous_image:
        # Before the first deploy deploytools recorded: the image that ran then.
        image, image_id, version = current.previous_image, "", None
        newer = [current]
    else:
        raise UsageError(
            f"environment {env} has no earlier release"
            + (f' "{to}"' if to else "")
            + " to roll back to",
            untouched="nothing was done",
            hint=f"`deploytools history --env {env}`",
        )
    db = Database.of(platform)
    revision_now = db.revision()
    revision_changed = bool(newer) and revision_now != newer[0].revision_before
    restore = restore_db or (revision_changed and any(r.expand_only is False for r in newer))
    backup_id = newer[0].backup_id if newer else None
    if restore and backup_id is None:
        raise UsageError(
            f"a restore is needed to roll back {env} to {image}, but release "
            f"{newer[0].id if newer else current.id} has no backup recorded",
            untouched="nothing was done",
            hint="restore one by hand (`deploytools backup list` / `backup restore`)",
        )
    record = ReleaseRecord(
        id=history.next_release_id(),
        environment=env,
        kind="rollback",
        who=who(),
        started=utc_now(),
        image=image,
        image_id=image_id,
        version=version,
        strategy=STRATEGY,
        previous=current.id,
        previous_image=current.image,
        revision_before=revision_now,
        reason=reason,
        notes=[f"rollback from {current.id} ({current.image}): {reason}"],
    )
    history.save_release(record)
    phases = app_service.Phases(session, record)
    try:
        with phases.phase("update"):
            roll_back(
                session,
                image=image,
                current=current,
                restore_backup=backup_id if restore else None,
            )
    except DeployError as error:
        record.outcome, record.finished, record.error = "failed", utc_now(), error.message
        history.save_release(record)
        error.message = f"rollback of {env} to {image} failed: {error.message}"
        raise
    if restore:
        record.restored_backup = backup_id
    record.revision_after = db.revision()
    record.outcome, record.finished = "succeeded", utc_now()
    history.save_release(record)
    return record
