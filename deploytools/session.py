"""The environment session: an environment opened once for a step, with its target (the engine
and Compose project it runs on), its state store and its records in it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from deploytools.context import EnvironmentPlatform, StepContext, swarm_not_supported
from deploytools.errors import DeadlineExceeded
from deploytools.platforms import Platform
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.store.environment import EnvironmentStore
from deploytools.store.files import FALLBACK_HELPER_IMAGE, BackupStore, helper_image, open_store
from deploytools.store.helper import MIN_IDLE_S
from deploytools.store.records import LockInfo
from deploytools.target import Target, wait_until_healthy


@dataclass
class EnvSession:
    """An environment opened for a step: its platform, its store and its history."""

    ctx: StepContext
    #: What the environment runs on: a Target (Compose) or a SwarmPlatform.
    platform: EnvironmentPlatform
    store: BackupStore
    history: EnvironmentStore
    lock: LockInfo | None = None

    @property
    def target(self) -> Target:
        """The Compose target, for the steps that have no Swarm path yet (UsageError on a
        Swarm environment); steps that need only the Platform protocol use `platform`."""
        if isinstance(self.platform, Target):
            return self.platform
        raise swarm_not_supported(self.platform.name)

    def progress(self, message: str) -> None:
        self.ctx.progress(f"[{self.platform.name}] {message}")

    def refresh_lock(self) -> None:
        if self.lock is not None:
            self.lock = self.history.refresh(self.lock)


def start_database(ctx: StepContext, target: Platform) -> bool:
    """Start the database service when it does not run (a first deploy to a new environment)
    and wait until it is healthy. A running one is not touched, but waited for too when not
    healthy yet: one just started (by `compose up`, say) may still be initialising its data
    directory, its server restarting once, and a deploy's first psql would find no server.
    Whether it was started."""
    service = ctx.config.project.database_service
    timeout_s = ctx.config.deploy.health_timeout_s
    running = target.running(service)
    if running:
        for container in running:
            wait_until_healthy(container, timeout_s=timeout_s)
        return False
    ctx.progress(f"[{target.name}] starting the database service {service}")
    target.start([service], what=f"starting the database service {service}")
    deadline = time.monotonic() + timeout_s
    # A Swarm task's container appears a moment after the stack is deployed.
    while not (started := target.running(service)):
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(
                f"the database service {service} of environment {target.name} has no running "
                f"container {timeout_s:.0f} s after it was started",
                hint=f"look at `deploytools status --env {target.name}`",
            )
        time.sleep(0.5)
    for container in started:
        wait_until_healthy(container, timeout_s=max(1.0, deadline - time.monotonic()))
    return True


@contextlib.contextmanager
def open_environment(
    ctx: StepContext,
    environment: str,
    *,
    read_only: bool = False,
    with_database: bool = False,
) -> Iterator[EnvSession]:
    """Connect to the environment's engine and open its backup store and history.
    `read_only`: for commands that only read; a store volume not created yet stays so.
    `with_database`: start the database service first when it does not run (a deploy to a
    new environment), so that the store's helper runs the database's image, which has the
    PostgreSQL client tools a backup's verification needs."""
    target = ctx.platform(environment)
    project = ctx.config.project
    if with_database and not read_only:
        start_database(ctx, target)
    if isinstance(target, SwarmPlatform):
        # The store lives on the manager's engine (docs/configuration.md): its helper runs
        # the database service's image when the manager has it.
        image = target.store_image() or FALLBACK_HELPER_IMAGE
    else:
        # The database service's image first: it has pg_restore (a stopped container's image
        # is on the engine as well). Another service's image, or Debian's, only when no
        # database container exists at all: enough to read and write records, not to verify
        # a backup.
        candidates = target.containers(project.database_service) or target.containers()
        image = helper_image(candidates)
    with open_store(
        target.engine,
        ctx.config.backups.store,
        image=image,
        name_prefix=target.project,
        create=not read_only,
        # The helper stays between commands (store/helper.py): a rollback in the watch window
        # then reaches the store with an exec, not a container start. Kept as long as the
        # window, so that a rollback late in it finds the helper still there.
        keep_s=max(float(MIN_IDLE_S), ctx.config.deploy.watch_window_s),
    ) as store:
        history = EnvironmentStore(store, environment, read_only=read_only)
        yield EnvSession(ctx=ctx, platform=target, store=store, history=history)
