"""Runbook step 5, "Run Alembic migrations": the new image's migrations, in a one-off container.

The container is the app service of the stack, run with the new image (`compose run --rm
--no-deps -T`), so it is on the stack's network with the service's own database settings. The
service's migrations/env.py runs them in one transaction with lock and statement timeouts (the
variables of deploy.migration_env), so a migration that fails leaves the schema where it was.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deploytools.config import Config
from deploytools.context import StepContext
from deploytools.database import Database
from deploytools.deploy_windows import check_window
from deploytools.engine.client import Engine
from deploytools.engine.errors import ImageNotFound
from deploytools.errors import DeployError, UsageError
from deploytools.platforms import Platform
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.redaction import redact_text, secret_names, secret_values
from deploytools.session import EnvSession, open_environment
from deploytools.steps.backup import latest_verified
from deploytools.store.records import ReleaseRecord, utc_now, who
from deploytools.target import VERSION_LABEL

#: Image label a release sets to "true" when its migrations only add (see ReleaseRecord).
EXPAND_ONLY_LABEL = "deploytools.migrations.expand-only"


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    id: str
    version: str | None
    expand_only: bool | None


@dataclass(frozen=True)
class MigrationResult:
    environment: str
    image: str
    revision_before: str | None
    revision_after: str | None
    backup_id: str | None
    no_backup_check: bool
    seconds: float
    sql: str | None = None

    @property
    def changed(self) -> bool:
        return self.revision_before != self.revision_after


def image_info(engine: Engine, ref: str) -> ImageInfo:
    """The image as the engine knows it; UsageError when it is not there (nothing is pulled:
    images are built once and loaded onto the engine by `image build`)."""
    try:
        image = engine.image(ref)
    except ImageNotFound:
        raise UsageError(
            f"image {ref} is not on the target's engine",
            untouched="nothing was done",
            hint="build or load it there first (`deploytools image build`)",
            facts={"image": ref},
        ) from None
    labels = image.labels
    flag = labels.get(EXPAND_ONLY_LABEL)
    return ImageInfo(
        ref=ref,
        id=image.id,
        version=labels.get(VERSION_LABEL),
        expand_only=None if flag is None else flag.lower() == "true",
    )


def release_image_info(
    platform: Platform, ref: str, *, progress: Callable[[str], None] | None = None
) -> ImageInfo:
    """`image_info` on the platform's engine. On Swarm the manager first pulls a release
    pinned by digest from its registry (the nodes pull from the same one): the image was
    pushed where it was built, not loaded onto the manager."""
    if isinstance(platform, SwarmPlatform):
        platform.ensure_image(ref, progress=progress)
    return image_info(platform.engine, ref)


def run(
    ctx: StepContext,
    *,
    environment: str,
    image: str,
    sql: bool = False,
    no_backup_check: bool = False,
    lock_wait_s: float = 0.0,
    outside_window: str | None = None,
) -> MigrationResult:
    """Run `image`'s migrations against `environment`'s database, under the deploy lock.

    :param environment: the environment's name.
    :param image: the release image whose migrations run.
    :param sql: print the SQL (`alembic upgrade --sql`) instead of running it.
    :param no_backup_check: run without a verified backup taken after the last release (the
        record says so).
    :param lock_wait_s: how long to wait for the lock.
    :param outside_window: the reason to migrate outside the environment's deploy windows
        (recorded); without it such a migration raises OutsideWindow before anything is touched.
    """
    window_note = None
    if not sql:  # printing the SQL changes nothing
        window_note = check_window(
            ctx.config,
            environment,
            datetime.now(UTC),
            outside_window=outside_window,
            operation="migrate",
        )
    with open_environment(ctx, environment) as session:
        if sql:
            return run_in(session, image=image, sql=True)
        ttl = ctx.config.deploy.lock_ttl_s
        with session.history.locked("migrate", ttl_s=ttl, wait_s=lock_wait_s) as lock:
            session.lock = lock
            info = release_image_info(session.platform, image, progress=ctx.progress)
            record = ReleaseRecord(
                id=session.history.next_release_id(),
                environment=environment,
                kind="migrate",
                who=who(),
                started=utc_now(),
                image=image,
                image_id=info.id,
                version=info.version,
                no_backup_check=no_backup_check,
                outside_window=window_note,
            )
            try:
                result = run_in(session, image=image, no_backup_check=no_backup_check)
            except DeployError as error:
                record.outcome, record.error, record.finished = "failed", error.message, utc_now()
                record.revision_before = error.facts.get("revision_before")
                record.revision_after = error.facts.get("revision_after")
                record.failure_output = output_tail(error.facts, ctx.config)
                session.history.save_release(record)
                raise
            record.outcome, record.finished = "succeeded", utc_now()
            record.revision_before, record.revision_after = (
                result.revision_before,
                result.revision_after,
            )
            record.backup_id = result.backup_id
            record.timings = {"migrate": round(result.seconds, 2)}
            session.history.save_release(record)
            return result


def require_backup(session: EnvSession) -> str:
    """The id of a verified backup taken after the last release started; UsageError if none."""
    current = session.history.current_release()
    since = (current.finished or current.started) if current else None
    found = latest_verified(session, since=since)
    if found is None:
        env = session.platform.name
        raise UsageError(
            f"environment {env} has no verified backup taken after its last release"
            + (f" ({current.id}, {current.started})" if current else ""),
            untouched="nothing was migrated",
            hint=f"take one (`deploytools backup create --env {env}`) or pass --no-backup-check",
        )
    return found.id


def run_in(
    session: EnvSession,
    *,
    image: str,
    sql: bool = False,
    no_backup_check: bool = False,
) -> MigrationResult:
    """`run` within an open environment (a deploy calls it under its lock)."""
    config = session.ctx.config
    target = session.platform
    release_image_info(target, image, progress=session.ctx.progress)
    db = Database.of(target)
    before = db.revision()
    backup_id = None
    if not sql and not no_backup_check:
        backup_id = require_backup(session)
    command = list(config.project.migration_command) + (["--sql"] if sql else [])
    session.progress(
        f"migrate: {' '.join(command)} in a one-off container of {image} "
        f"(revision now {before or 'none'})"
    )
    started = time.monotonic()
    try:
        done = target.run_once(
            config.project.app_service,
            command,
            env={config.deploy.image_variable: image},
            container_env=config.deploy.migration_env,
            timeout_s=config.deploy.migration_timeout_s,
            what="the migration",
        )
    except DeployError as error:
        after = db.revision()
        reason = _failure_line(error.facts)
        if reason:
            error.message = f"the migration with {image} failed: {reason}"
        error.untouched = (
            f"the schema is at revision {after or 'none'} (it was {before or 'none'}); "
            "the app was not touched by the migration"
        )
        error.hint = error.hint or "read the migration's output above, fix it, release again"
        error.facts.update({"revision_before": before, "revision_after": after})
        raise
    seconds = time.monotonic() - started
    if sql:
        return MigrationResult(
            environment=target.name,
            image=image,
            revision_before=before,
            revision_after=before,
            backup_id=None,
            no_backup_check=no_backup_check,
            seconds=seconds,
            sql=done.stdout,
        )
    after = db.revision()
    session.progress(f"migrate: revision {before or 'none'} -> {after or 'none'} ({seconds:.1f} s)")
    return MigrationResult(
        environment=target.name,
        image=image,
        revision_before=before,
        revision_after=after,
        backup_id=backup_id,
        no_backup_check=no_backup_check,
        seconds=seconds,
    )


#: Lines of a failed migration's output kept in its release record.
OUTPUT_TAIL_LINES = 60


def output_tail(facts: Mapping[str, Any], config: Config) -> list[str]:
    """The last lines of a failed command's output (stderr, then stdout), with every secret
    masked: what the incident report shows of the failure."""
    text = str(facts.get("stderr") or "") + "\n" + str(facts.get("stdout") or "")
    lines = [line for line in text.splitlines() if line.strip()][-OUTPUT_TAIL_LINES:]
    secrets = secret_values(os.environ, secret_names(config))
    return [redact_text(line, secrets) for line in lines]


def _failure_line(facts: dict[str, Any]) -> str | None:
    """The line of the migration's output that says why it failed (Alembic's ERROR/FAILED, or
    the exception), rather than Compose's last line."""
    lines = (str(facts.get("stderr", "")) + "\n" + str(facts.get("stdout", ""))).splitlines()
    for marker in ("FAILED:", "ERROR", "Error:", "Exception"):
        found = [line.strip() for line in lines if marker in line]
        if found:
            return found[-1][:400]
    return None
