"""`deploytools status` and `deploytools history`: what runs in an environment (or that nothing
does), and what its history records."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from deploytools.context import StepContext
from deploytools.errors import DeployError
from deploytools.session import open_environment
from deploytools.steps import watch_keep
from deploytools.steps.watch_keep import KeptStatus
from deploytools.store.records import BackupManifest, LockInfo, ReleaseRecord, Verification
from deploytools.target import ServiceState, Target


@dataclass(frozen=True)
class EnvironmentStatus:
    environment: str
    docker_host: str
    compose_project: str
    services: tuple[ServiceState, ...]
    # From the environment's history in its backup store (issue 5): the release serving, the
    # newest backups with whether their last verification passed, and the deploy lock.
    release: ReleaseRecord | None = None
    backups: tuple[tuple[BackupManifest, bool | None], ...] = ()
    lock: LockInfo | None = None
    history_error: str | None = None
    #: The previous release's container kept up for a rollback by switch (steps/watch_keep.py).
    kept: KeptStatus | None = None

    @property
    def running(self) -> bool:
        return any(s.state == "running" for s in self.services)

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(s.healthy for s in self.services)


def run(ctx: StepContext, *, environment: str) -> EnvironmentStatus:
    """Read the state of `environment`'s Compose project from its engine (a Swarm
    environment's: its stack's current tasks, each with its node).

    :param ctx: the step context (configuration, targets).
    :param environment: the environment's name in deploy.toml.
    """
    target = ctx.platform(environment)
    services = tuple(target.services())
    status = EnvironmentStatus(
        environment=environment,
        docker_host=target.environment.docker_host or "(local engine)",
        compose_project=target.project,
        services=services,
    )
    if not services:
        return status
    try:
        with open_environment(ctx, environment, read_only=True) as session:
            history = session.history
            backups = []
            for manifest in history.manifests()[-3:]:
                verification = history.verification(manifest.id)
                backups.append((manifest, None if verification is None else verification.ok))
            release = history.current_release()
            return dataclasses.replace(
                status,
                release=release,
                backups=tuple(backups),
                lock=history.lock(),
                # Kept containers belong to the Compose strategy's rollback by switch.
                kept=watch_keep.status(target, release) if isinstance(target, Target) else None,
            )
    except DeployError as error:
        # Status reports what it can: the services above are still true.
        return dataclasses.replace(status, history_error=error.message)


@dataclass(frozen=True)
class ReleaseHistory:
    """`deploytools history`: an environment's newest release records, its backups with their
    last verification, and its deploy lock."""

    environment: str
    current: ReleaseRecord | None
    releases: list[ReleaseRecord]  # newest first
    backups: list[BackupManifest]  # oldest first
    verifications: dict[str, Verification | None]
    lock: LockInfo | None


def history(ctx: StepContext, *, environment: str, limit: int = 20) -> ReleaseHistory:
    """The `limit` newest release records of `environment` (deploys, rollbacks, migrations),
    the release serving, every backup with its verification, and the lock; read only."""
    with open_environment(ctx, environment, read_only=True) as session:
        records = session.history.releases()[-limit:][::-1]
        manifests = session.history.manifests()
        return ReleaseHistory(
            environment=environment,
            current=session.history.current_release(),
            releases=records,
            backups=manifests,
            verifications={m.id: session.history.verification(m.id) for m in manifests},
            lock=session.history.lock(),
        )
