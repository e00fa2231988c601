"""The environment session: an environment opened once for a step, with its target (the engine
and Compose project it runs on), its state store and its records in it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from deploytools.context import StepContext
from deploytools.store.environment import EnvironmentStore
from deploytools.store.files import BackupStore, helper_image, open_store
from deploytools.store.records import LockInfo
from deploytools.target import Target


@dataclass
class EnvSession:
    """An environment opened for a step: its target, its store and its history."""

    ctx: StepContext
    target: Target
    store: BackupStore
    history: EnvironmentStore
    lock: LockInfo | None = None

    def progress(self, message: str) -> None:
        self.ctx.progress(f"[{self.target.name}] {message}")

    def refresh_lock(self) -> None:
        if self.lock is not None:
            self.lock = self.history.refresh(self.lock)


@contextlib.contextmanager
def open_environment(
    ctx: StepContext, environment: str, *, read_only: bool = False
) -> Iterator[EnvSession]:
    """Connect to the environment's engine and open its backup store and history.
    `read_only`: for commands that only read; a store volume not created yet stays so."""
    target = ctx.target(environment)
    project = ctx.config.project
    candidates = target.containers(project.database_service) + target.containers()
    image = helper_image(candidates)
    with open_store(
        target.engine,
        ctx.config.backups.store,
        image=image,
        name_prefix=target.project,
        create=not read_only,
    ) as store:
        history = EnvironmentStore(store, environment, read_only=read_only)
        yield EnvSession(ctx=ctx, target=target, store=store, history=history)
