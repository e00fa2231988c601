"""A recreate deploy cancelled while its app is stopped: leave one whole release serving.

GitHub cancels a job by SIGINT to the step's process, SIGTERM 7.5 s later, and kills the
process tree 2.5 s after that; the CLI turns the first signal into KeyboardInterrupt and
ignores the later ones (cli/signals.py). Between the stop of the old app and the new one's
health, a bare KeyboardInterrupt would leave production down until someone re-ran the deploy.
`recovered` catches it there and, within GRACE_S, puts back what may serve:

- before the migration committed: its one-off container is removed and its database sessions
  ended (the transaction rolls back, its locks go), and the very same old containers are
  started again (as Target.paused does), on untouched data;
- once it committed: the new release is started to the end (the old one may not run on the
  new schema), or, when that cannot be done in time, the error and the record say what was
  left and what to run.

The record (outcome "interrupted", error "cancelled ...", a note on what serves) is saved and
DeployCancelled raised: the deploy's lock is released on the way out.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

from deploytools.commands import postgres as pg
from deploytools.database import Database
from deploytools.engine.client import ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL, Container
from deploytools.engine.errors import EngineError
from deploytools.errors import DeployCancelled, DeployError
from deploytools.session import EnvSession
from deploytools.steps.app_service import Phases
from deploytools.store.records import ReleaseRecord, utc_now
from deploytools.target import start_again, wait_until_healthy

#: Seconds from the cancel to a serving release: GitHub's SIGTERM comes at 7.5 s (ignored) and
#: its kill at 10 s; what is left after GRACE_S saves the record and releases the lock.
GRACE_S = 7.0
#: Seconds an old container still stopping is given before it is killed (it was being stopped).
STOP_AGAIN_S = 2

#: Which release a cancel leaves serving.
OLD, NEW = "old", "new"
#: The phases after a migration that finished: compose may already have replaced the old
#: container, and the schema is the new release's.
_AFTER_MIGRATION = ("start", "healthy")


def choose(phase: str | None, revision_before: str | None, revision_now: str | None) -> str:
    """OLD or NEW: the old release while the schema is still the one it ran on (and the
    migration cannot commit any more), the new one once the migration committed or finished."""
    if phase in _AFTER_MIGRATION:
        return NEW
    return OLD if revision_now == revision_before else NEW


@contextlib.contextmanager
def recovered(
    session: EnvSession,
    record: ReleaseRecord,
    phases: Phases,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[None]:
    """The recreate's stopped window: a KeyboardInterrupt in it becomes DeployCancelled once
    a release is put back (or what was left is said). `record.previous_image` and the app
    containers running on entry are the old release."""
    old = session.target.running(session.ctx.config.project.app_service)
    try:
        yield
    except KeyboardInterrupt as interrupt:
        started = clock()
        error = _recover(session, record, phases.current, old, started + GRACE_S, clock, interrupt)
        # What the cancel cost, from the signal to a release put back (or given up on).
        record.timings["cancel"] = round(clock() - started, 2)
        record.phase_ends["cancel"] = utc_now()
        with contextlib.suppress(DeployError, EngineError):
            session.history.save_release(record)
        raise error from interrupt


def _recover(
    session: EnvSession,
    record: ReleaseRecord,
    phase: str | None,
    old: Sequence[Container],
    deadline: float,
    clock: Callable[[], float],
    interrupt: KeyboardInterrupt,
) -> DeployCancelled:
    env = record.environment
    why = str(interrupt) or "interrupted"
    session.progress(f"deploy {record.id}: cancelled ({why}) in its {phase} phase: recovering")
    ended = _end_migration(session, deadline, clock) if phase not in _AFTER_MIGRATION else ""
    try:
        db = Database.of(session.target)
        revision: str | None = db.revision(timeout_s=max(deadline - clock(), 1.0))
    except (DeployError, EngineError) as error:
        detail = error.message if isinstance(error, DeployError) else str(error)
        return _left(
            record,
            why,
            phase,
            f"nothing was started: the database's revision could not be read ({detail})",
            hint=f"look at `deploytools status --env {env}` and `deploytools history --env {env}`",
        )
    record.revision_after = revision
    if choose(phase, record.revision_before, revision) == OLD:
        return _restart_old(session, record, why, phase, old, revision, ended, deadline, clock)
    return _finish_new(session, record, why, phase, revision, deadline, clock)


def _end_migration(session: EnvSession, deadline: float, clock: Callable[[], float]) -> str:
    """Remove the migration's one-off container and end its database sessions, so that it
    cannot commit after the revision is read; what was done, for the record."""
    target = session.target
    labels = [
        f"{PROJECT_LABEL}={target.project}",
        f"{SERVICE_LABEL}={target.config.project.app_service}",
        f"{ONEOFF_LABEL}=True",
    ]
    try:
        # Created but not started ones too: the killed `compose run` would have removed them.
        found = target.engine.containers(labels=labels, all=True)
        addresses = sorted({a for c in found for a in _addresses(c)})
        for container in found:
            container.remove(force=True)
        if not addresses:
            return ""
        db = Database.of(target)

        def query(sql: str) -> str:
            return db.query(sql, timeout_s=max(deadline - clock(), 1.0)).strip()

        query(pg.terminate_clients_sql(addresses))
        while query(pg.count_clients_sql(addresses)) not in ("", "0"):
            if clock() >= deadline:
                return "the migration's database session was still ending"
            time.sleep(0.1)
    except (EngineError, DeployError) as error:
        return f"the migration could not be stopped cleanly: {error}"
    return "the migration was stopped and its transaction rolled back"


def _addresses(container: Container) -> list[str]:
    networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]


def _restart_old(
    session: EnvSession,
    record: ReleaseRecord,
    why: str,
    phase: str | None,
    old: Sequence[Container],
    revision: str | None,
    ended: str,
    deadline: float,
    clock: Callable[[], float],
) -> DeployCancelled:
    env = record.environment
    data = f"the schema is untouched at revision {revision or 'none'}" + (
        f" ({ended})" if ended else ""
    )
    if not old:
        return _left(
            record,
            why,
            phase,
            f"no app ran before this deploy and none was started; {data}",
            hint=f"deploy again: `deploytools deploy --env {env} --image {record.image}`",
        )
    try:
        start_again(old, stop_timeout_s=STOP_AGAIN_S)
        for container in old:
            wait_until_healthy(container, timeout_s=max(deadline - clock(), 0.5))
    except (EngineError, DeployError) as error:
        detail = error.message if isinstance(error, DeployError) else str(error)
        return _left(
            record,
            why,
            phase,
            f"the previous release ({record.previous_image}) was started again but is not "
            f"healthy yet ({detail}); {data}",
            hint=f"look at `deploytools status --env {env}`; `deploytools rollback --env {env}` "
            "starts the previous release again",
        )
    return _left(
        record,
        why,
        phase,
        f"the previous release ({record.previous_image}) serves again: its same containers "
        f"were started again; {data}",
        hint=f"release again when ready: `deploytools deploy --env {env} --image {record.image}`",
    )


def _finish_new(
    session: EnvSession,
    record: ReleaseRecord,
    why: str,
    phase: str | None,
    revision: str | None,
    deadline: float,
    clock: Callable[[], float],
) -> DeployCancelled:
    env = record.environment
    config = session.ctx.config
    schema = (
        f"the migration had committed (revision {revision or 'none'}, was "
        f"{record.revision_before or 'none'})"
    )
    try:
        session.target.start(
            [config.project.app_service],
            env={config.deploy.image_variable: record.image},
            what=f"starting the app with {record.image}",
            timeout_s=max(deadline - clock(), 1.0),
        )
        for container in session.target.running(config.project.app_service):
            wait_until_healthy(container, timeout_s=max(deadline - clock(), 0.5))
    except (EngineError, DeployError) as error:
        detail = error.message if isinstance(error, DeployError) else str(error)
        return _left(
            record,
            why,
            phase,
            f"{schema}; the new release ({record.image}) could NOT be started in time "
            f"({detail}): the app may be DOWN",
            hint=f"finish it: `deploytools deploy --env {env} --image {record.image}`; or go "
            f"back: `deploytools rollback --env {env}` (it restores the pre-deploy backup "
            "when the old release cannot run on the new schema)",
        )
    # The new release serves, healthy: it is the current release (rollback goes from it).
    record.outcome = "succeeded"
    return _left(
        record,
        why,
        phase,
        f"{schema}; so the new release ({record.image}) was started to the end and serves",
        hint=f"run the post-deploy checks: `deploytools verify --env {env}`",
    )


def _left(
    record: ReleaseRecord,
    why: str,
    phase: str | None,
    serving: str,
    *,
    hint: str,
) -> DeployCancelled:
    """Write what the cancel left into the record (`recovered` saves it) and make the error
    that says it."""
    message = f"deploy {record.id} of {record.image} to {record.environment} was cancelled ({why})"
    if phase:
        message += f" in its {phase} phase"
    if record.outcome == "in-progress":
        record.outcome = "interrupted"
    record.finished = utc_now()
    record.error = message
    record.notes.append(serving)
    return DeployCancelled(
        message, untouched=serving, hint=hint, facts={"release": record.id, "phase": phase}
    )
