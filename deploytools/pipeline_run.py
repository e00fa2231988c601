"""`deploytools pipeline run`: the whole runbook (pipeline.STEPS) in one process, resumable.

Each step of `pipeline.py` is run by calling its step function in-process (not the CLI), in the
runbook's order, with the image built once and handed on by its ID (or, once pushed, by its
registry digest), never by its tag. What was done is kept in a pipeline record stored with the
production target (in its backup store, beside the release records and the deploy lock):

    production/pipelines/<tag>.json         the record: each step's status, time and detail
    production/pipelines/<tag>/<step>.json  the JSON results of the checks (the report's evidence)
    production/pipelines/lock.json          the pipeline lock, held for the whole run

So a run that failed, was stopped at the approval gate or was killed continues, when run again,
at the first step that has not passed; a second pipeline started while one runs is refused. The
deploy lock that the deploy, migrate and rollback steps take is another file: the pipeline lock
keeps other pipelines out for the whole run, the deploy lock keeps everyone out of a deploy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploytools import pipeline
from deploytools.checks.results import Verdict
from deploytools.context import StepContext
from deploytools.deploy_windows import check_window
from deploytools.errors import CheckFailed, DeployError, LockHeld, UsageError
from deploytools.jsonable import jsonable
from deploytools.session import EnvSession, open_environment
from deploytools.steps import app_service
from deploytools.steps import backup as backup_step
from deploytools.steps import checks as checks_step
from deploytools.steps import deploy as deploy_step
from deploytools.steps import image as image_step
from deploytools.steps import migrate as migrate_step
from deploytools.steps import monitor as monitor_step
from deploytools.steps import release as release_step
from deploytools.steps import report as report_step
from deploytools.steps import rollback as rollback_step
from deploytools.store.environment import EnvironmentStore
from deploytools.store.records import LockInfo, ReleaseRecord, utc_now, who

#: Asked at the approval gate with what is about to happen; True approves.
Approver = Callable[[str], bool]

PASSED, FAILED, PENDING, RUNNING, SKIPPED = "passed", "failed", "pending", "running", "skipped"


class ApprovalRequired(UsageError):
    """The production gate needs a person and none can be asked (no terminal, no --yes)."""


@dataclass
class StepRun:
    """One step of one pipeline run, as it went."""

    name: str
    status: str = PENDING  # pending | running | passed | failed | skipped
    started: str | None = None
    seconds: float | None = None
    detail: str = ""


@dataclass
class PipelineRecord:
    """Everything a re-run needs to continue: what is done, and what it handed on."""

    tag: str
    version: str
    repo: str
    who: str
    started: str
    attempt: int = 1
    revision: str | None = None
    image: str | None = None  # pinned: the image ID, or repository@sha256 once pushed
    image_ref: str | None = None  # repository:version, for people
    #: running | waiting-for-approval | declined | failed | rolled-back | succeeded | interrupted
    status: str = "running"
    approved_by: str | None = None
    #: The release records the steps left: "staging", "production" (deploys), "migrate",
    #: "rollback" -> record id in that environment's history.
    releases: dict[str, str] = field(default_factory=dict)
    backup_id: str | None = None
    steps: list[StepRun] = field(default_factory=list)
    error: str | None = None
    finished: str | None = None
    runs: int = 0
    notes: list[str] = field(default_factory=list)

    def find(self, name: str) -> StepRun | None:
        return next((run for run in self.steps if run.name == name), None)

    def step(self, name: str) -> StepRun:
        """The step's run, added (pending) when the record has none yet."""
        run = self.find(name)
        if run is not None:
            return run
        run = StepRun(name)
        self.steps.append(run)
        return run

    @property
    def seconds(self) -> float:
        return round(sum(s.seconds or 0.0 for s in self.steps), 2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["steps"] = [StepRun(**s) for s in values.get("steps", [])]
        return cls(**values)


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


class PipelineLog(EnvironmentStore):
    """The pipeline records of the environment at the gate, and the pipeline's own lock (not
    the deploy lock, which its deploy, migrate and rollback steps take themselves)."""

    def __init__(self, store: Any, environment: str) -> None:
        super().__init__(store, environment)
        store.ensure_dir(f"{environment}/pipelines")

    @property
    def _lock_file(self) -> str:
        return f"{self.environment}/pipelines/lock.json"

    def _record_file(self, tag: str) -> str:
        return f"{self.environment}/pipelines/{tag}.json"

    def evidence_dir(self, tag: str) -> str:
        return f"{self.environment}/pipelines/{tag}"

    def load(self, tag: str) -> PipelineRecord | None:
        raw = self.store.read(self._record_file(tag))
        if raw is None:
            return None
        try:
            return PipelineRecord.from_dict(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise DeployError(
                f"the pipeline record of {tag} in the backup store is unreadable: {exc}",
                untouched="nothing was done",
                hint=f"remove {self._record_file(tag)} from the store to start {tag} afresh",
            ) from None

    def save(self, record: PipelineRecord) -> None:
        self.store.write(self._record_file(record.tag), _dump(record))

    def save_evidence(self, tag: str, step: str, data: Any) -> None:
        """A check's result in the form of its `--json` output, as the report reads it."""
        self.store.ensure_dir(self.evidence_dir(tag))
        self.store.write(
            f"{self.evidence_dir(tag)}/{step}.json", _dump({"ok": True, "result": data})
        )

    def evidence(self, tag: str) -> dict[str, bytes]:
        directory = self.evidence_dir(tag)
        if not self.store.exists(directory):
            return {}
        found = {}
        for name in self.store.list_files(directory, ".json"):
            raw = self.store.read(f"{directory}/{name}")
            if raw is not None:
                found[name] = raw
        return found

    def clear_evidence(self, tag: str, steps: set[str]) -> None:
        self.store.remove(*(f"{self.evidence_dir(tag)}/{s}.json" for s in sorted(steps)))


# -- the run -----------------------------------------------------------------------------------


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
    :returns: the record and the runbook report; `error` is set when a step failed (the
        record then says which, and what was rolled back).
    :raises LockHeld: another pipeline runs (nothing was done).
    """
    version = release_step.parse_tag(tag)
    gate = pipeline.approval_gate()
    production = str(gate.environment)
    ctx.config.environment(production)  # an unknown environment is a usage error, now
    # Every environment's window is checked before anything runs: refused half-way, by
    # production's window, the pipeline would leave staging ahead of production for nothing.
    for name in dict.fromkeys(s.environment for s in pipeline.STEPS if s.environment):
        check_window(
            ctx.config,
            name,
            datetime.now(UTC),
            outside_window=outside_window,
            operation="pipeline run",
        )
    with open_environment(ctx, production) as session:
        log = PipelineLog(session.store, production)
        lock = _acquire(log, ctx)
        try:
            record = log.load(tag)
            commit = release_step.tag_commit(release_step.repository_root(repo), tag)
            if record is not None and record.revision not in (None, commit):
                # The tag now names another commit (moved, or another repository): a new
                # release, whatever was done for the old one.
                ctx.progress(
                    f"{tag} was run before at commit {str(record.revision)[:12]}, it is now at "
                    f"{commit[:12]}: starting again"
                )
                record = _fresh(tag, str(version), repo, attempt=record.attempt + 1)
                log.clear_evidence(tag, {s.name for s in pipeline.STEPS})
            elif record is not None and record.status == "succeeded":
                if _serving(session, record):
                    ctx.progress(
                        f"{tag} already went through the pipeline ({record.finished}): "
                        f"{production} runs {record.image_ref or record.image}; nothing to do"
                    )
                    markdown, document = _report(ctx, log, record)
                    return PipelineResult(record, markdown, document, already_done=True)
                ctx.progress(
                    f"{tag} went through the pipeline before, but {production} no longer runs "
                    "it: running it again"
                )
                record = _fresh(tag, str(version), repo, attempt=record.attempt + 1)
                log.clear_evidence(tag, {s.name for s in pipeline.STEPS})
            elif record is None:
                record = _fresh(tag, str(version), repo)
            walker = _Walker(
                ctx,
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
            markdown, document = _report(ctx, log, record)
            return PipelineResult(record, markdown, document, resumed_from, error=error)
        finally:
            log.release(lock)


def _acquire(log: PipelineLog, ctx: StepContext) -> LockInfo:
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
            f"{log.environment}/pipelines/lock.json from the backup store once it is older than "
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
        steps=[StepRun(s.name) for s in pipeline.STEPS],
    )


def _serving(session: EnvSession, record: PipelineRecord) -> bool:
    """Whether the environment runs the record's image, healthy."""
    running = app_service.running_app(session.target)
    if running is None or not running.healthy or not record.image:
        return False
    return record.image in (running.image_id, running.image)


class _Walker:
    """Walks pipeline.STEPS for one record, saving it after every change."""

    def __init__(
        self,
        ctx: StepContext,
        *,
        log: PipelineLog,
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
            for step in pipeline.after(pipeline.approval_gate().name):
                record.step(step.name).status = PENDING
            record.step(pipeline.approval_gate().name).status = PENDING
            record.steps = [s for s in record.steps if s.name != pipeline.ROLLBACK.name]
            record.approved_by = None
            record.notes.append(f"run {record.runs}: the production steps start again")
        first = next(
            (s for s in pipeline.STEPS if record.step(s.name).status not in (PASSED, SKIPPED)),
            None,
        )
        resumed_from = first.name if record.runs > 1 and first is not None else None
        if resumed_from:
            self.ctx.progress(f"continuing the pipeline of {record.tag} at {resumed_from}")
        record.status, record.error, record.finished = "running", None, None
        self.save()
        total = len(pipeline.STEPS)
        for index, step in enumerate(pipeline.STEPS, start=1):
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

    def _run_step(self, step: pipeline.Step, done: StepRun, label: str) -> None:
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

    def _failed(self, step: pipeline.Step, done: StepRun, error: DeployError) -> DeployError:
        record = self.record
        done.status, done.detail = FAILED, error.one_line()
        record.error = f"{step.name}: {error.message}"
        record.status = "waiting-for-approval" if isinstance(error, ApprovalRequired) else "failed"
        if isinstance(error, ApprovalRequired):
            done.status, done.detail = PENDING, error.message
        if _declined(error):
            record.status = "declined"
        if error.facts.get("rollback") or error.facts.get("rolled_back"):
            # The step rolled production back itself (deploy: an unhealthy release; monitor: a
            # breach): a re-run starts again at the gate, as after the pipeline's own rollback.
            record.status = "rolled-back"
            if error.facts.get("rollback"):
                record.releases["rollback"] = str(error.facts["rollback"])
        record.finished = utc_now()
        self.save()
        self.ctx.progress(f"{step.name}: {done.status}: {error.message}")
        if step.name in pipeline.ROLLBACK_WHEN_FAILED:
            self._roll_back(error)
        error.facts.setdefault("pipeline_step", step.name)
        return error

    def _roll_back(self, error: DeployError) -> None:
        """As the workflow does when production's verification fails."""
        record = self.record
        back = record.step(pipeline.ROLLBACK.name)
        label = f"[rollback] {pipeline.ROLLBACK.name}"
        self.ctx.progress(f"{label}: {pipeline.ROLLBACK.title}")
        back.status, back.started = RUNNING, utc_now()
        self.save()
        started = time.monotonic()
        try:
            rolled = rollback_step.run(
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
    def _handler(self, step: pipeline.Step) -> Callable[[], tuple[str, str]]:
        handlers: dict[str, Callable[[], tuple[str, str]]] = {
            "verify-release": self._verify_release,
            "build-image": self._build_image,
            "deploy-staging": lambda: self._deploy(pipeline.STAGING),
            "smoke-staging": lambda: self._suite(step, pipeline.STAGING, "smoke"),
            "validate-staging": lambda: self._suite(step, pipeline.STAGING, "validate"),
            "approve-production": self._approve,
            "backup-production": self._backup,
            "migrate-production": self._migrate,
            "deploy-production": lambda: self._deploy(self.production),
            "verify-production": lambda: self._suite(step, self.production, "verify"),
            "monitor-production": lambda: self._monitor(step),
        }
        if step.name not in handlers:  # a step pipeline.py gained that this runner lacks
            raise UsageError(
                f"pipeline run does not know how to run step {step.name}",
                untouched="the steps before it ran; nothing after it",
            )
        return handlers[step.name]

    def _verify_release(self) -> tuple[str, str]:
        # Staging's rules here (a pre-release may go to staging); production's at the gate.
        report = release_step.run(
            self.ctx, tag=self.record.tag, repo=self.repo, target_env=pipeline.STAGING
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
        built = image_step.build(
            self.ctx, tag=self.record.tag, repo=self.repo, environment=pipeline.STAGING
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
        try:
            result = deploy_step.run(
                self.ctx,
                environment=environment,
                image=self._image(),
                outside_window=self.outside_window,
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
        return PASSED, result.message

    def _suite(self, step: pipeline.Step, environment: str, suite: str) -> tuple[str, str]:
        report = checks_step.run(self.ctx, environment=environment, suite=suite)
        self.log.save_evidence(self.record.tag, step.name, jsonable(report))
        if not report.results:
            raise CheckFailed(
                f"{suite} on {environment}: no checks are configured for this suite",
                untouched=_untouched(step),
                hint=f'add checks with suites = [..., "{suite}"] under [checks] in deploy.toml',
            )
        failed = [r for r in report.results if r.verdict is not Verdict.PASS]
        if failed:
            raise CheckFailed(
                f"{suite} on {environment}: {len(failed)} of {len(report.results)} checks "
                "did not pass: "
                + "; ".join(
                    f"{r.name} ({r.verdict.value}: {r.detail or r.measured})" for r in failed[:5]
                ),
                untouched=_untouched(step),
                hint="read the failing checks; fix the release and tag again",
                facts={"report": jsonable(report)},
            )
        return PASSED, f"{len(report.results)} checks passed"

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
        manifest = backup_step.create(self.ctx, environment=self.production, reason="pre-deploy")
        backup_step.verify(self.ctx, environment=self.production, backup_id=manifest.id)
        self.record.backup_id = manifest.id
        return PASSED, (
            f"{manifest.id} verified: {manifest.total_rows} rows in "
            f"{len(manifest.row_counts)} tables, revision {manifest.revision or 'none'}"
        )

    def _migrate(self) -> tuple[str, str]:
        try:
            result = migrate_step.run(
                self.ctx,
                environment=self.production,
                image=self._image(),
                outside_window=self.outside_window,
            )
        finally:
            newest = _newest(self.log, "migrate")
            if newest is not None and newest.image == self.record.image:
                self.record.releases["migrate"] = newest.id
        return PASSED, (
            f"revision {result.revision_before or 'none'} -> {result.revision_after or 'none'}"
        )

    def _monitor(self, step: pipeline.Step) -> tuple[str, str]:
        if self.monitor_s <= 0:
            return SKIPPED, "not asked for (--monitor 0); run `deploytools monitor` to watch"
        interval = self.monitor_interval_s
        if interval is None:
            interval = min(self.ctx.config.checks.monitor.interval_s, max(1.0, self.monitor_s / 5))

        def roll_back(ctx: StepContext, environment: str, reason: str) -> object:
            return rollback_step.run(ctx, environment=environment, confirm=None, reason=reason)

        report = monitor_step.run(
            self.ctx,
            environment=self.production,
            duration_s=self.monitor_s,
            interval_s=interval,
            rollback_on_breach=True,
            rollback=roll_back,
        )
        self.log.save_evidence(self.record.tag, step.name, jsonable(report))
        if report.breaches:
            raise CheckFailed(
                f"monitor on {self.production}: " + "; ".join(report.breaches),
                untouched="rolled back automatically" if report.rolled_back else None,
                hint="read the breached rules; fix the release and tag again",
                facts={"rolled_back": report.rolled_back},
            )
        return PASSED, f"{report.samples} samples over {self.monitor_s:g} s, no breach"


def _declined(error: DeployError) -> bool:
    return bool(error.facts.get("declined"))


def _untouched(step: pipeline.Step) -> str:
    if step.production:
        return "the release stays deployed in production"
    return "production was not touched; staging runs the release"


def _newest(log: PipelineLog, kind: str) -> ReleaseRecord | None:
    records = [r for r in log.releases() if r.kind == kind]
    return records[-1] if records else None


# -- the report --------------------------------------------------------------------------------


def _report(
    ctx: StepContext, log: PipelineLog, record: PipelineRecord
) -> tuple[str | None, dict[str, Any] | None]:
    """The runbook document of the release (report.py) with the pipeline's steps before it.

    Production's record when the release got there (its deploy, else its failed migration),
    else staging's deploy; the checks' results stored by the run are its evidence."""
    where: tuple[str, str] | None = None
    for key, environment in (
        (log.environment, log.environment),
        ("migrate", log.environment),
        (pipeline.STAGING, pipeline.STAGING),
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
            document = report_step.gather(
                ctx, environment=where[0], release_id=where[1], results=[Path(tmp)]
            )
    except DeployError as error:
        ctx.progress(f"report: could not be made: {error.one_line()}")
        return summary, None
    markdown = summary + "\n" + report_step.render_markdown(document)
    return markdown, report_step.to_json(document)


_MARK = {PASSED: "✅", FAILED: "❌", PENDING: "⏸️", RUNNING: "⏳", SKIPPED: "⏭️"}


def render_summary(record: PipelineRecord) -> str:
    """The pipeline's own account, as Markdown: each step's status, time and detail."""
    lines = [
        f"# Pipeline {record.tag}: {record.status}",
        "",
        f"- Image: `{record.image_ref or 'not built'}` pinned as `{record.image or '-'}`",
        f"- Commit: `{record.revision or '-'}`; started {record.started} by {record.who}; "
        f"run {record.runs} of attempt {record.attempt}",
        f"- Approval: {record.approved_by or 'not given'}",
    ]
    if record.error:
        lines.append(f"- Stopped at {record.error}")
    lines += ["", "| step | status | time | detail |", "|---|---|---|---|"]
    steps = [*pipeline.STEPS, pipeline.ROLLBACK]
    for step in steps:
        run = record.find(step.name) or StepRun(step.name)
        if step is pipeline.ROLLBACK and run.status == PENDING:
            continue
        seconds = f"{run.seconds:.1f} s" if run.seconds is not None else "-"
        detail = run.detail.replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(
            f"| {step.name} | {_MARK.get(run.status, '')} {run.status} | {seconds} | {detail} |"
        )
    lines.append(f"\nTotal step time: {record.seconds:.1f} s\n")
    return "\n".join(lines)


# -- JSON ----------------------------------------------------------------------------------------


def _dump(value: Any) -> bytes:
    return json.dumps(jsonable(value), indent=2, sort_keys=True, default=str).encode() + b"\n"
