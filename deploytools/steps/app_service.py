"""The app service of an environment as deploy, the rolling strategy and rollback handle it:
stop it, start it from an image, wait until it is healthy, keep its image for rollbacks; and the
phases that time a release into its record.

Below deploy.py, deploy_rolling.py and rollback.py, which all use it (deploy picks a strategy
and rolls back an unhealthy release; rollback rolls through the same strategies).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from deploytools.engine.client import Container
from deploytools.engine.errors import EngineError, NotFound
from deploytools.errors import CheckFailed, DeployError
from deploytools.platforms import Platform
from deploytools.session import EnvSession, start_database
from deploytools.store.records import ReleaseRecord, utc_now
from deploytools.target import service_state, wait_until_healthy

#: Tag that keeps a released image on the engine for rollbacks: <repository>:<env>-release-<id>.
KEEP_TAG = "{env}-release-{id}"


class Phases:
    """Times each phase into the record, refreshes the lock between phases, reports progress."""

    def __init__(self, session: EnvSession, record: ReleaseRecord) -> None:
        self.session = session
        self.record = record
        #: The phase entered last (it may have ended since): what a cancel interrupted.
        self.current: str | None = None

    @contextlib.contextmanager
    def phase(self, name: str, *, save: bool = True) -> Iterator[None]:
        """`save=False`: the phase's time stays in memory until the step's next record save.
        For the rolling cut-over: each save is a `docker exec` in the store's helper, engine
        work (a runc start on a small machine) while the new release takes the traffic; the
        step saves its outcome right after, and a re-run of an interrupted deploy does not
        read the timings."""
        self.session.progress(f"{self.record.kind} {self.record.id}: {name}")
        self.current = name
        started = time.monotonic()
        try:
            yield
        finally:
            self.record.timings[name] = round(time.monotonic() - started, 2)
            self.record.phase_ends[name] = utc_now()
            self.session.refresh_lock()
            if save:
                self.session.history.save_release(self.record)


class MigrationFailed(DeployError):
    """The migration failed; the schema is where it was (one transaction)."""


class OldReleaseServing(CheckFailed):
    """The new release failed before it took traffic (exit 1); the old one serves, untouched."""


@dataclass(frozen=True)
class RunningApp:
    image: str
    image_id: str
    healthy: bool


def running_app(target: Platform) -> RunningApp | None:
    """What the first running app container runs (on Swarm: a running task's container, on
    its node), or None when none runs."""
    for container in target.containers(target.config.project.app_service):
        if container.status == "running":
            state = service_state(container)
            return RunningApp(image=state.image, image_id=state.image_id, healthy=state.healthy)
    return None


def ensure_database(session: EnvSession) -> None:
    """Start the database service when it does not run (a first deploy to a new environment),
    and wait until it is healthy; a running one is left alone. (A deploy opens its environment
    `with_database`, which does this before the store's helper is chosen; this is for the
    steps that open it otherwise.)"""
    start_database(session.ctx, session.target)


def stop_app(session: EnvSession) -> None:
    config = session.ctx.config
    session.target.stop([config.project.app_service], what="stopping the app")


def start_app(session: EnvSession, image: str) -> None:
    """(Re)create the app service's container from `image`, without touching the database."""
    config = session.ctx.config
    session.target.start(
        [config.project.app_service],
        env={config.deploy.image_variable: image},
        what=f"starting the app with {image}",
    )


def wait_app_healthy(session: EnvSession) -> None:
    target = session.target
    timeout = session.ctx.config.deploy.health_timeout_s
    containers = [
        c for c in target.containers(target.config.project.app_service) if c.status != "removing"
    ]
    if not containers:
        raise CheckFailed(f"no app container exists in environment {target.name}")
    for container in containers:
        wait_until_healthy(container, timeout_s=timeout)


def keep_ref(session: EnvSession, record: ReleaseRecord) -> str:
    """The image reference a rollback to `record` uses, without pulling: its keep tag if it
    still exists (it names exactly the image deployed), else the reference it was deployed as
    if that still names the same image, else the image's ID if the engine still has it (a
    rollback record's reference can be another release's keep tag, pruned since), else the
    deployed reference (compose will say plainly that it is gone)."""
    repository = session.ctx.config.project.image_repository
    tag = f"{repository}:" + KEEP_TAG.format(env=record.environment, id=record.id)

    def names_the_deployed_image(ref: str) -> bool:
        try:
            found = session.target.engine.image(ref)
        except EngineError:  # not there, or not a valid reference
            return False
        return not record.image_id or found.id == record.image_id

    for candidate in (tag, record.image, record.image_id):
        if candidate and names_the_deployed_image(candidate):
            return candidate
    return record.image


def keep_images(session: EnvSession, record: ReleaseRecord, records: list[ReleaseRecord]) -> None:
    """Tag the deployed image so it stays on the engine; untag releases older than the newest
    deploy.keep_images (an image still tagged otherwise, or in use, stays). `records`: the
    environment's records, oldest first, `record` included."""
    engine = session.target.engine
    repository = session.ctx.config.project.image_repository
    env = record.environment
    with contextlib.suppress(EngineError):
        tag = KEEP_TAG.format(env=env, id=record.id)
        engine.image(record.image_id).tag(repository, tag)
    serving = [r for r in records if r.serving]
    for old in serving[: -session.ctx.config.deploy.keep_images]:
        with contextlib.suppress(EngineError):
            engine.remove_image(f"{repository}:" + KEEP_TAG.format(env=env, id=old.id), prune=False)


def stop_and_remove(container: Container) -> None:
    """Stop with the container's grace period (its requests finish; gunicorn drains on
    SIGTERM), then remove it."""
    grace = container.attrs.get("Config", {}).get("StopTimeout") or 10
    with contextlib.suppress(NotFound):
        container.stop(timeout_s=int(grace))
        container.remove()
