"""`deploytools pipeline run`: walks the runbook (runbook.STEPS) in one process, resumable.

Each step of the runbook is run by calling the same step function its CLI command calls (not
the CLI), in the runbook's order, with the image built once and handed on by its ID, never by
its tag; when an environment runs on Swarm, whose nodes pull the image, it is pushed to
project.image_repository and handed on by its registry digest. The step functions come in a
`PipelineSteps` (the real ones by default), so the walker's tests pass fakes. What was done is
kept in a pipeline record (record.py) stored with the production target (store.py); so a run
that failed, was stopped at the approval gate or was killed continues, when run again, at the
first step that has not passed, and a second pipeline started while one runs is refused.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from deploytools.context import StepContext
from deploytools.deploy_windows import check_window
from deploytools.errors import (
    ApprovalRequired,
    CheckFailed,
    DeployCancelled,
    DeployError,
    LockHeld,
    UsageError,
)
from deploytools.jsonable import jsonable
from deploytools.pipeline import runbook
from deploytools.pipeline.record import (
    FAILED,
    PASSED,
    PENDING,
    RUNNING,
    SKIPPED,
    PipelineRecord,
    StepRun,
    render_summary,
)
from deploytools.pipeline.store import PipelineStore
from deploytools.platforms import Platform
from deploytools.session import EnvSession, open_environment
from deploytools.steps import app_service
from deploytools.steps import backup as backup_step
from deploytools.steps import check_suites as checks_step
from deploytools.steps import deploy as deploy_step
from deploytools.steps import image as image_step
from deploytools.steps import migrate as migrate_step
from deploytools.steps import monitor as monitor_step
from deploytools.steps import release as release_step
from deploytools.steps import report as report_step
from deploytools.steps import rollback as rollback_step
from deploytools.store.records import LockInfo, ReleaseRecord, utc_now, who

__all__ = [
    "ApprovalRequired",
    "Approver",
    "PipelineResult",
    "PipelineSteps",
    "render_summary",
    "run",
]

#: Asked at the approval gate with what is about to happen; True approves.
Approver = Callable[[str], bool]


class OpenEnvironment(Protocol):
    """Opens an environment's session (its target and state store): session.open_environment."""

    def __call__(
        self, ctx: StepContext, environment: str
    ) -> AbstractContextManager[EnvSession]: ...


def _tag_commit(repo: Path, tag: str) -> str:
    return release_step.tag_commit(release_step.repository_root(repo), tag)


@dataclass(frozen=True)
class PipelineSteps:
    """The step functions the walker calls: the ones the CLI commands call, by default.

    Each is called with the keyword arguments of the real one; tests pass fakes instead.
    """

    #: release verify (steps/release.py `run`)
    verify_release: Callable[..., release_step.ReleaseReport] = release_step.run
    #: image build (steps/image.py `build`)
    build_image: Callable[..., image_step.BuiltImage] = image_step.build
    #: deploy (steps/deploy.py `run`), staging and production
    deploy: Callable[..., deploy_step.DeployResult] = deploy_step.run
    #: smoke, validate and verify (steps/check_suites.py `run_and_record`)
    check_suite: Callable[..., checks_step.SuiteReport] = checks_step.run_and_record
    #: backup create, verified, then retention (steps/backup.py `run`)
    backup: Callable[..., backup_step.BackupRun] = backup_step.run
    #: migrate (steps/migrate.py `run`)
    migrate: Callable[..., migrate_step.MigrationResult] = migrate_step.run
    #: monitor, rolling back on a breach (steps/monitor.py `run_and_record`)
    monitor: Callable[..., monitor_step.MonitorReport] = monitor_step.run_and_record
    #: rollback (steps/rollback.py `run`)
    rollback: Callable[..., ReleaseRecord] = rollback_step.run
    #: report (steps/report/ `gather`)
    report: Callable[..., report_step.ReleaseDocument] = report_step.gather
    #: the commit a tag names in the repository at a path
    tag_commit: Callable[[Path, str], str] = _tag_commit
    #: what runs in an environment now (a release already serving is not deployed again)
    running_app: Callable[[Platform], app_service.RunningApp | None] = app_service.running_app
    #: opens the environment at the gate, whose store keeps the pipeline's records
    open_environment: OpenEnvironment = open_environment


@dataclass(frozen=True)
class PipelineResult:
    record: PipelineRecord
    #: The runbook document (report.py) of the release, when one could be made, as Markdown.
    report_markdown: str | None
    report: dict[str, Any] | None
    #: The step the run started at when it continued an earlier one; None: from the start.
    resumed_from: str | None = None
    already_done: bool = False
    error: DeployError | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None


def run(
    ctx: StepContext,
    *,
    tag: str,
    repo: Path,
    approve: Approver | None = None,
    approved_by: str | None = None,
    monitor_s: float = 0.0,
    monitor_interval_s: float | None = None,
    outside_window: str | None = None,
    steps: PipelineSteps | None = None,
) -> PipelineResult:
    """Run the runbook for release `tag`, or continue an earlier run of it.

    :param ctx: the step context (configuration, targets, progress).
    :param tag: the release tag, `vMAJOR.MINOR.PATCH`.
    :param repo: a path inside the release's git work tree.
    :param approve: asked at the production gate; None: nobody can be asked.
    :param approved_by: the approval is already given (`--yes`), by whom; then `approve` is
        not asked.
    :param monitor_s: how long to watch production after verification (0: not watched; the
        monitor step is then skipped and says so).
    :param monitor_interval_s: seconds between monitor samples (default: [checks.monitor]).
    :param outside_window: the reason to go on outside the environments' deploy windows
        (recorded in their release records); without it OutsideWindow is raised first.
    :param steps: the step functions to call (default: the real ones).
    :returns: the record and the runbook report; `error` is set when a step failed (the
        record then says which, and what was rolled back).
    :raises LockHeld: another pipeline runs (nothing was done).
    """
    steps = PipelineSteps() if steps is None else steps
    version = release_step.parse_tag(tag)
    gate = runbook.approval_gate()
    production = str(gate.environment)
    ctx.config.environment(production)  # an unknown environment is a usage error, now
    # Every environment's window is checked before anything runs: refused half-way, by
    # production's window, the pipeline would leave staging ahead of production for nothing.
    for name in dict.fromkeys(s.environment for s in runbook.STEPS if s.environment):
        check_window(
            ctx.config,
            name,
            datetime.now(UTC),
            outside_window=outside_window,
            operation="pipeline run",
        )
    with steps.open_environment(ctx, production) as session:
        log = PipelineStore(session.store, production)
        lock = _acquire(log, ctx)
        try:
            record = log.load(tag)
            commit = steps.tag_commit(repo, tag)
            if record is not None and record.revision not in (None, commit):
                # The tag now names another commit (moved, or another repository): a new
                # release, whatever was done for the old one.
                ctx.progress(
                    f"{tag} was run before at commit {str(record.revision)[:12]}, it is now at "
                    f"{commit[:12]}: starting again"
                )
                record = _fresh(tag, str(version), repo, attempt=record.attempt + 1)
                log.clear_evidence(tag, {s.name for s in runbook.STEPS})
            elif record is not None and record.status == "succeeded":
                if _serving(steps, session.platform, record):
                    ctx.progress(
                        f"{tag} already went through the pipeline ({record.finished}): "
                        f"{production} runs {record.image_ref or record.image}; nothing to do"
                    )
                    markdown, document = _report(ctx, steps, log, record)
                    return PipelineResult(record, markdown, document, already_done=True)
                ctx.progress(
                    f"{tag} went through the pipeline before, but {production} no longer runs "
                    "it: running it again"
                )
                record = _fresh(tag, str(version), repo, attempt=record.attempt + 1)
                log.clear_evidence(tag, {s.name for s in runbook.STEPS})
            elif record is None:
                record = _fresh(tag, str(version), repo)
            walker = _Walker(
                ctx,
                steps=steps,
                log=log,
                lock=lock,
                record=record,
                repo=repo,
                approve=approve,
                approved_by=approved_by,
                monitor_s=monitor_s,
                monitor_interval_s=monitor_interval_s,
                outside_window=outside_window,
            )
            resumed_from, error = walker.walk()
            markdown, document = _report(ctx, steps, log, record)
            return PipelineResult(record, markdown, document, resumed_from, error=error)
        finally:
            log.release(lock)


def _acquire(log: PipelineStore, ctx: StepContext) -> LockInfo:
    try:
        return log.acquire("pipeline", ttl_s=ctx.config.deploy.lock_ttl_s)
    except LockHeld as error:
        held = log.lock()
        if held is not None:
            error.message = (
                f"another pipeline is running: {held.holder} (pid {held.pid}) since {held.since}"
            )
        error.untouched = "nothing was done; the running pipeline goes on"
        error.hint = (
            "wait for it to finish; if its process is gone from another host, remove "
            f"{log.lock_file} from the backup store once it is older than "
            f"{ctx.config.deploy.lock_ttl_s} s"
        )
        raise


def _fresh(tag: str, version: str, repo: Path, *, attempt: int = 1) -> PipelineRecord:
    return PipelineRecord(
        tag=tag,
        version=version,
        repo=str(repo.resolve()),
        who=who(),
        started=utc_now(),
        attempt=attempt,
        steps=[StepRun(s.name) for s in runbook.STEPS],
    )


def _serving(steps: PipelineSteps, platform: Platform, record: PipelineRecord) -> bool:
    """Whether the environment (one engine, or a Swarm's tasks) runs the record's image,
    healthy."""
    running = steps.running_app(platform)
    if running is None or not running.healthy or not record.image:
        return False
    return record.image in (running.image_id, running.image)


class _Walker:
    """Walks runbook.STEPS for one record, saving it after every change."""

    def __init__(
        self,
        ctx: StepContext,
        *,
        steps: PipelineSteps,
        log: PipelineStore,
        lock: LockInfo,
        record: PipelineRecord,
        repo: Path,
        approve: Approver | None,
        approved_by: str | None,
        monitor_s: float,
        monitor_interval_s: float | None,
        outside_window: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.steps = steps
        self.outside_window = outside_window
        self.log = log
        self.lock = lock
        self.record = record
        self.repo = repo
        self.approve = approve
        self.approved_by = approved_by
        self.monitor_s = monitor_s
        self.monitor_interval_s = monitor_interval_s
        self.production = log.environment

    # -- bookkeeping ---------------------------------------------------------------------------
    def save(self) -> None:
        self.lock = self.log.refresh(self.lock)
        self.log.save(self.record)

    def walk(self) -> tuple[str | None, DeployError | None]:
        record = self.record
        record.runs += 1
        if record.status == "rolled-back":
            # The rollback undid the production steps: they, and the approval, start again.
            for step in runbook.after(runbook.approval_gate().name):
                record.step(step.name).status = PENDING
            record.step(runbook.approval_gate().name).status = PENDING
            record.steps = [s for s in record.steps if s.name != runbook.ROLLBACK.name]
            record.approved_by = None
            record.notes.append(f"run {record.runs}: the production steps start again")
        first = next(
            (s for s in runbook.STEPS if record.step(s.name).status not in (PASSED, SKIPPED)),
            None,
        )
        resumed_from = first.name if record.runs > 1 and first is not None else None
        if resumed_from:
            self.ctx.progress(f"continuing the pipeline of {record.tag} at {resumed_from}")
        record.status, record.error, record.finished = "running", None, None
        self.save()
        total = len(runbook.STEPS)
        for index, step in enumerate(runbook.STEPS, start=1):
            done = record.step(step.name)
            label = f"[{index}/{total}] {step.name}"
            if done.status in (PASSED, SKIPPED):
                self.ctx.progress(f"{label}: {done.status} earlier, {done.detail}")
                continue
            try:
                self._run_step(step, done, label)
            except DeployError as error:
                return resumed_from, self._failed(step, done, error)
            except BaseException as error:
                # Ctrl-C or a bug: the record says where it stopped; a re-run continues there.
                done.status = FAILED
                done.detail = f"interrupted: {type(error).__name__}"
                record.status, record.finished = "interrupted", utc_now()
                with contextlib.suppress(DeployError):
                    self.save()
                raise
        record.status, record.finished = "succeeded", utc_now()
        self.save()
        self.ctx.progress(
            f"pipeline {record.tag}: succeeded; {self.production} runs {record.image_ref} "
            f"({record.seconds:.1f} s of steps)"
        )
        return resumed_from, None

    def _run_step(self, step: runbook.Step, done: StepRun, label: str) -> None:
        self.ctx.progress(f"{label}: {step.title}")
        done.status, done.started, done.detail, done.seconds = RUNNING, utc_now(), "", None
        self.save()
        started = time.monotonic()
        try:
            status, detail = self._handler(step)()
        finally:
            done.seconds = round(time.monotonic() - started, 2)
        done.status, done.detail = status, detail
        self.save()
        self.ctx.progress(f"{label}: {status} in {done.seconds:.1f} s, {detail}")

    def _failed(self, step: runbook.Step, done: StepRun, error: DeployError) -> DeployError:
        record = self.record
        done.status, done.detail = FAILED, error.one_line()
        record.error = f"{step.name}: {error.message}"
        record.status = "waiting-for-approval" if isinstance(error, ApprovalRequired) else "failed"
        if isinstance(error, ApprovalRequired):
            done.status, done.detail = PENDING, error.message
        if _declined(error):
            record.status = "declined"
        if isinstance(error, DeployCancelled):
            # Cancelled, not failed: the step put a whole release back and said which; a re-run
            # continues at this step, as after any interruption.
            done.detail = f"interrupted: {error.one_line()}"
            record.status = "interrupted"
        if error.facts.get("rollback") or error.facts.get("rolled_back"):
            # The step rolled production back itself (deploy: an unhealthy release; monitor: a
            # breach): a re-run starts again at the gate, as after the pipeline's own rollback.
            record.status = "rolled-back"
            if error.facts.get("rollback"):
                record.releases["rollback"] = str(error.facts["rollback"])
        record.finished = utc_now()
        self.save()
        self.ctx.progress(f"{step.name}: {done.status}: {error.message}")
        if step.name in runbook.ROLLBACK_WHEN_FAILED:
            self._roll_back(error)
        error.facts.setdefault("pipeline_step", step.name)
        return error

    def _roll_back(self, error: DeployError) -> None:
        """As the workflow does when production's verification fails."""
        record = self.record
        back = record.step(runbook.ROLLBACK.name)
        label = f"[rollback] {runbook.ROLLBACK.name}"
        self.ctx.progress(f"{label}: {runbook.ROLLBACK.title}")
        back.status, back.started = RUNNING, utc_now()
        self.save()
        started = time.monotonic()
        try:
            rolled = self.steps.rollback(
                self.ctx, environment=self.production, confirm=None, reason="verification failed"
            )
        except DeployError as again:
            back.seconds = round(time.monotonic() - started, 2)
            back.status, back.detail = FAILED, again.one_line()
            self.save()
            error.message += f"; the rollback failed too: {again.message}"
            error.untouched = again.untouched
            error.hint = again.hint
            return
        back.seconds = round(time.monotonic() - started, 2)
        back.status = PASSED
        back.detail = f"{self.production} runs {rolled.image} again (release {rolled.id})" + (
            f", database restored from {rolled.restored_backup}" if rolled.restored_backup else ""
        )
        record.releases["rollback"] = rolled.id
        record.status = "rolled-back"
        self.save()
        self.ctx.progress(f"{label}: passed in {back.seconds:.1f} s, {back.detail}")
        error.untouched = f"rolled back automatically: {back.detail}"
        error.hint = "read the failed checks above and the release's logs; fix it and tag again"

    # -- the steps -----------------------------------------------------------------------------
    def _handler(self, step: runbook.Step) -> Callable[[], tuple[str, str]]:
        handlers: dict[str, Callable[[], tuple[str, str]]] = {
            "verify-release": self._verify_release,
            "build-image": self._build_image,
            "deploy-staging": lambda: self._deploy(runbook.STAGING),
            "smoke-staging": lambda: self._suite(step, runbook.STAGING, "smoke"),
            "validate-staging": lambda: self._suite(step, runbook.STAGING, "validate"),
            "approve-production": self._approve,
            "backup-production": self._backup,
            "migrate-production": self._migrate,
            "deploy-production": lambda: self._deploy(self.production),
            "verify-production": lambda: self._suite(step, self.production, "verify"),
            "monitor-production": lambda: self._monitor(step),
        }
        if step.name not in handlers:  # a step runbook.py gained that this walker lacks
            raise UsageError(
                f"pipeline run does not know how to run step {step.name}",
                untouched="the steps before it ran; nothing after it",
            )
        return handlers[step.name]

    def _verify_release(self) -> tuple[str, str]:
        # Staging's rules here (a pre-release may go to staging); production's at the gate.
        report = self.steps.verify_release(
            self.ctx, tag=self.record.tag, repo=self.repo, target_env=runbook.STAGING
        )
        self.log.save_evidence(self.record.tag, "verify-release", jsonable(report))
        report.raise_if_failed()
        self.record.revision = report.commit
        passed = sum(1 for c in report.checks if c.verdict == "passed")
        return (
            PASSED,
            f"{passed} of {len(report.checks)} checks passed, commit {report.commit[:12]}",
        )

    def _build_image(self) -> tuple[str, str]:
        push = needs_registry(self.ctx)
        built = self.steps.build_image(
            self.ctx, tag=self.record.tag, repo=self.repo, environment=runbook.STAGING, push=push
        )
        # The ID (a digest of the image's configuration) names exactly this build on the
        # engine; a tag could be moved by the next build.
        self.record.image = built.pinned if built.pushed else built.image_id
        self.record.image_ref = built.reference
        self.record.revision = built.revision
        return PASSED, f"{built.reference} pinned as {self.record.image}"

    def _image(self) -> str:
        if not self.record.image:
            raise UsageError(
                "no image was built for this pipeline",
                untouched="nothing was deployed",
                hint="run the pipeline again from the start",
            )
        return self.record.image

    def _deploy(self, environment: str) -> tuple[str, str]:
        # Production's approval was the gate before its steps. Staging comes before the gate:
        # when it requires approval too, --yes or the person at the terminal gives it.
        production = environment == self.production
        approved = self.record.approved_by if production else self.approved_by
        try:
            result = self.steps.deploy(
                self.ctx,
                environment=environment,
                image=self._image(),
                # Rolling when the release is expand-only and the proxy can switch (zero
                # downtime), else recreate; the release record says which, and why.
                strategy="auto",
                outside_window=self.outside_window,
                approved_by=approved,
                confirm=None if production else self.approve,
            )
        except DeployError as error:
            release = error.facts.get("release")
            if release:
                self.record.releases[environment] = str(release)
            raise
        if result.record is not None:
            self.record.releases[environment] = result.record.id
            if result.record.backup_id and environment == self.production:
                self.record.backup_id = self.record.backup_id or result.record.backup_id
            if result.changed and result.record.strategy_reason:
                strategy = f"{result.record.strategy}, {result.record.strategy_reason}"
                return PASSED, f"{result.message} ({strategy})"
        return PASSED, result.message

    def _suite(self, step: runbook.Step, environment: str, suite: str) -> tuple[str, str]:
        report = self.steps.check_suite(self.ctx, environment=environment, suite=suite)
        self.log.save_evidence(self.record.tag, step.name, jsonable(report))
        try:
            # The suite's own rule, as `deploytools smoke|validate|verify` applies it.
            report.raise_if_failed()
        except CheckFailed as error:
            error.untouched = _untouched(step)
            error.hint = "read the failing checks; fix the release and tag again"
            raise
        return PASSED, f"{len(report.results)} checks passed; {report.recorded}"

    def _approve(self) -> tuple[str, str]:
        config = self.ctx.config
        environment = config.environment(self.production)
        # What `config check` checks at the gate, plus what production needs that staging did
        # not: a release tag (no pre-release) and its secrets, so an approval is never spent on
        # a run that cannot finish.
        tag_rule = release_step.check_tag_format(
            release_step.parse_tag(self.record.tag),
            self.production,
            guarded=environment.requires_approval,
        )
        if tag_rule.failed:
            raise CheckFailed(
                tag_rule.reason, untouched=f"{self.production} was not touched", facts={}
            )
        missing = [name for name in environment.secrets if not os.environ.get(name)]
        if missing:
            raise UsageError(
                f"{self.production}'s secrets are not set: {', '.join(missing)}",
                untouched=f"{self.production} was not touched",
                hint="export them and run the pipeline again; it continues at the gate",
            )
        if not environment.requires_approval:
            self.record.approved_by = "not required"
            return SKIPPED, f"{self.production} does not require approval (deploy.toml)"
        if self.approved_by:
            self.record.approved_by = self.approved_by
            return PASSED, f"approved by {self.approved_by}; {tag_rule.reason}"
        question = (
            f"Deploy {self.record.image_ref} ({self.record.image}) to {self.production}? "
            "Staging passed smoke and validation"
        )
        if self.approve is None:
            raise ApprovalRequired(
                f"{self.production} needs a person's approval and nobody can be asked "
                "(no terminal)",
                untouched=f"{self.production} was not touched; staging runs the release",
                hint=f"run `deploytools pipeline run --tag {self.record.tag} --yes` to approve; "
                "it continues at the gate",
            )
        if not self.approve(question):
            raise ApprovalRequired(
                f"the deploy to {self.production} was not approved",
                untouched=f"{self.production} was not touched; staging runs the release",
                hint="run the pipeline again to be asked again",
                facts={"declined": True},
            )
        self.record.approved_by = who()
        return PASSED, f"approved by {self.record.approved_by}; {tag_rule.reason}"

    def _backup(self) -> tuple[str, str]:
        done = self.steps.backup(self.ctx, environment=self.production, reason="pre-deploy")
        manifest = done.manifest
        self.record.backup_id = manifest.id
        pruned = f"; {len(done.pruned)} old backups pruned" if done.pruned else ""
        return PASSED, (
            f"{manifest.id} verified: {manifest.total_rows} rows in "
            f"{len(manifest.row_counts)} tables, revision {manifest.revision or 'none'}{pruned}"
        )

    def _migrate(self) -> tuple[str, str]:
        try:
            result = self.steps.migrate(
                self.ctx,
                environment=self.production,
                image=self._image(),
                outside_window=self.outside_window,
            )
        finally:
            newest = self.log.newest_release("migrate")
            if newest is not None and newest.image == self.record.image:
                self.record.releases["migrate"] = newest.id
        return PASSED, (
            f"revision {result.revision_before or 'none'} -> {result.revision_after or 'none'}"
        )

    def _monitor(self, step: runbook.Step) -> tuple[str, str]:
        if self.monitor_s <= 0:
            return SKIPPED, "not asked for (--monitor 0); run `deploytools monitor` to watch"
        interval = self.monitor_interval_s
        if interval is None:
            interval = min(self.ctx.config.checks.monitor.interval_s, max(1.0, self.monitor_s / 5))
        report = self.steps.monitor(
            self.ctx,
            environment=self.production,
            duration_s=self.monitor_s,
            interval_s=interval,
            rollback_on_breach=True,
        )
        self.log.save_evidence(self.record.tag, step.name, jsonable(report))
        try:
            # The watch's own rule, as `deploytools monitor` applies it.
            report.raise_if_failed()
        except CheckFailed as error:
            error.hint = "read the breached rules; fix the release and tag again"
            raise
        return PASSED, f"{report.samples} samples over {self.monitor_s:g} s, no breach"


def needs_registry(ctx: StepContext) -> bool:
    """Whether the release image must go to a registry (`image build --push`): an environment
    of the runbook runs on Swarm, whose nodes pull it from there. Otherwise it stays on the
    engine it was built on and goes on by its ID, as the steps on one engine want it."""
    environments = dict.fromkeys(s.environment for s in runbook.STEPS if s.environment)
    return any(ctx.config.environment(name).is_swarm for name in environments)


def _declined(error: DeployError) -> bool:
    return bool(error.facts.get("declined"))


def _untouched(step: runbook.Step) -> str:
    if step.production:
        return "the release stays deployed in production"
    return "production was not touched; staging runs the release"


# -- the report --------------------------------------------------------------------------------


def _report(
    ctx: StepContext, steps: PipelineSteps, log: PipelineStore, record: PipelineRecord
) -> tuple[str | None, dict[str, Any] | None]:
    """The runbook document of the release (report.py) with the pipeline's steps before it.

    Production's record when the release got there (its deploy, else its failed migration),
    else staging's deploy; the checks' results stored by the run are its evidence."""
    where: tuple[str, str] | None = None
    for key, environment in (
        (log.environment, log.environment),
        ("migrate", log.environment),
        (runbook.STAGING, runbook.STAGING),
    ):
        if key in record.releases:
            where = (environment, record.releases[key])
            break
    summary = render_summary(record)
    if where is None:
        return summary, None
    try:
        with tempfile.TemporaryDirectory(prefix="deploytools-pipeline-") as tmp:
            for name, raw in log.evidence(record.tag).items():
                (Path(tmp) / name).write_bytes(raw)
            document = steps.report(
                ctx, environment=where[0], release_id=where[1], results=[Path(tmp)]
            )
    except DeployError as error:
        ctx.progress(f"report: could not be made: {error.one_line()}")
        return summary, None
    markdown = summary + "\n" + report_step.render_markdown(document)
    return markdown, report_step.to_json(document)
