"""The runbook document of one release, built from its records and the checks' evidence.

`build_document` is pure: it takes the release record, the records around it, the backup's
manifest and verification, and the evidence (evidence.py), all typed, and fills in every part of
the runbook's form. What no evidence covers says so ("not recorded", "not measured: no check
measures it"), never "TBD".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from deploytools import contacts
from deploytools.config import Config
from deploytools.pipeline import runbook
from deploytools.sizes import size_text
from deploytools.steps.report.evidence import CheckRow, Evidence, ReleaseVerification, SuiteRun
from deploytools.store.records import BackupManifest, ReleaseRecord, Verification

#: The runbook's success metrics: the key of [thresholds], the runbook's label, its target.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("health_ms", "Health Endpoint", "< {:g}ms"),
    ("api_p95_ms", "API Response (p95)", "< {:g}ms"),
    ("error_rate_percent", "Error Rate", "< {:g}%"),
    ("permission_check_ms", "Permission Check", "< {:g}ms"),
    ("auth_success_percent", "Auth Success", "> {:g}%"),
    ("database_latency_ms", "Database Latency", "< {:g}ms"),
    ("cpu_percent", "CPU Usage", "< {:g}%"),
    ("memory_mb", "Memory Usage", "< {:g}MB"),
)

OUTCOME_STATUS = {
    "succeeded": "passed",
    "failed": "failed",
    "rolled-back": "rolled back",
    "in-progress": "in progress",
    "interrupted": "failed",
}
VERDICT_STATUS = {"pass": "passed", "fail": "failed", "inconclusive": "inconclusive"}
_VERDICT_RANK = {"fail": 0, "inconclusive": 1, "pass": 2}


@dataclass(frozen=True)
class StepRow:
    name: str
    title: str
    runbook_step: int
    status: str  # a key of render.ICON
    duration_s: float | None
    detail: str


@dataclass(frozen=True)
class MetricRow:
    metric: str
    target: str
    measured: str
    status: str  # met | missed | inconclusive | not measured
    source: str  # which check measured it, in which suite


@dataclass(frozen=True)
class BackupSection:
    id: str
    location: str
    created: str
    size: int
    sha256: str
    revision: str | None
    rows: int
    tables: int
    verified: str | None  # when
    verification_ok: bool | None
    verification_detail: str


@dataclass(frozen=True)
class LogEntry:
    at: str  # ISO 8601, UTC
    text: str


@dataclass(frozen=True)
class ReleaseDocument:
    """The runbook document of one release in one environment."""

    environment: str
    project: str
    record_id: str
    kind: str
    version: str
    image: str
    who: str
    started: str
    finished: str | None
    outcome: str
    status: str
    previous_version: str | None
    verification: tuple[dict[str, str], ...]  # name, status, detail
    verification_note: str
    steps: tuple[StepRow, ...]
    metrics: tuple[MetricRow, ...]
    backup: BackupSection | None
    backup_note: str
    rollback_command: str
    rollback_note: str
    log: tuple[LogEntry, ...] = field(default=())
    #: How the release replaced the one before and why ("rolling, expand-only, ..."); for a
    #: record from before the choice was kept, the strategy alone.
    strategy: str = ""
    #: The escalation contacts and channels as Markdown ([contacts]); "" when none are set.
    contacts: str = ""
    #: The code-quality gate's jobs on the tagged commit (name, state, seconds, url), as
    #: release verify read them from GitHub, and where they come from (or why there are none).
    code_quality: tuple[dict[str, str], ...] = ()
    code_quality_note: str = "not recorded: release verify's results were not given to the report"

    @property
    def completed(self) -> bool:
        return self.outcome != "in-progress"


def utc_time(text: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (a time without an offset is UTC)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class _Around:
    """The records and evidence around the release a document is about."""

    environment: str
    record: ReleaseRecord
    migration: ReleaseRecord | None
    evidence: Evidence
    manifest: BackupManifest | None
    verification: Verification | None
    staging_record: ReleaseRecord | None
    rollback: ReleaseRecord | None


def build_document(
    config: Config,
    *,
    environment: str,
    record: ReleaseRecord,
    records: Sequence[ReleaseRecord],
    manifest: BackupManifest | None,
    verification: Verification | None,
    evidence: Evidence,
    staging_record: ReleaseRecord | None = None,
) -> ReleaseDocument:
    """The document of `record`, from the evidence; pure.

    :param config: the configuration (thresholds, checks, backup store, project).
    :param environment: the environment of the record.
    :param record: the release record.
    :param records: every record of the environment, oldest first (previous release, rollbacks).
    :param manifest: the manifest of the record's backup, when it has one.
    :param verification: the backup's last verification, when there is one.
    :param evidence: the checks' results.
    :param staging_record: staging's record of the same image, when staging could be read.
    """
    by_id = {r.id: r for r in records}
    previous = by_id.get(record.previous or "")
    previous_version = version_of(previous) if previous else None
    rollback = next(
        (r for r in records if r.kind == "rollback" and (r.previous or "") == record.id), None
    )
    around = _Around(
        environment=environment,
        record=record,
        migration=_migration_of(record, records),
        evidence=evidence,
        manifest=manifest,
        verification=verification,
        staging_record=staging_record,
        rollback=rollback,
    )
    status = OUTCOME_STATUS.get(record.outcome, record.outcome)
    verification_rows, verification_note = _verification(evidence.release_verify)
    quality_rows, quality_note = code_quality(evidence.release_verify)
    backup, backup_note = _backup(config, environment, record, manifest, verification)
    command, note = rollback_plan(
        environment, record.expand_only, previous_version, _backup_named(record, manifest)
    )
    return ReleaseDocument(
        environment=environment,
        project=config.project.name,
        record_id=record.id,
        kind=record.kind,
        version=version_of(record) or "unknown",
        image=record.image,
        who=record.who,
        started=record.started,
        finished=record.finished,
        outcome=record.outcome,
        status=status if rollback is None else "rolled back",
        previous_version=previous_version,
        verification=verification_rows,
        verification_note=verification_note,
        steps=_steps(around),
        metrics=_metrics(config, environment, evidence),
        backup=backup,
        backup_note=backup_note,
        rollback_command=command,
        rollback_note=note,
        log=_log(around),
        contacts=contacts_markdown(config),
        code_quality=quality_rows,
        code_quality_note=quality_note,
        strategy=strategy_text(record),
    )


def strategy_text(record: ReleaseRecord) -> str:
    """ "rolling, expand-only, the proxy switches the traffic": the strategy and why."""
    if record.kind != "deploy":
        return record.kind
    if record.strategy_reason:
        return f"{record.strategy}, {record.strategy_reason}"
    return f"{record.strategy} (why it was chosen was not recorded)"


def contacts_markdown(config: Config) -> str:
    """The escalation contacts as Markdown, or "" when none are configured."""
    c = config.contacts
    configured = c.tiers or c.slack_channel or c.status_page or c.email_list
    return contacts.markdown(c) if configured else ""


def _migration_of(record: ReleaseRecord, records: Sequence[ReleaseRecord]) -> ReleaseRecord | None:
    """The `migrate` run of the same image just before the deploy (the pipeline migrates in its
    own step, then deploys), if there was one since the release before."""
    since = record.previous or ""
    found = None
    for other in records:
        if other.id >= record.id:
            break
        if other.kind == "migrate" and other.image == record.image and other.id > since:
            found = other
    return found


def newest_release(records: Sequence[ReleaseRecord]) -> ReleaseRecord:
    """The record a report is about by default: the newest deploy (a migration belongs to the
    deploy after it; a rollback shows in the report of the release it rolled back)."""
    deploys = [r for r in records if r.kind == "deploy"]
    return deploys[-1] if deploys else records[-1]


def version_of(record: ReleaseRecord) -> str | None:
    if record.version:
        return record.version
    image = record.image
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    return tag.removeprefix("v") or None


def _verification(
    report: ReleaseVerification | None,
) -> tuple[tuple[dict[str, str], ...], str]:
    if report is None:
        return (), "not recorded: release verify's results were not given to the report"
    rows = tuple({"name": c.name, "status": c.status, "detail": c.detail} for c in report.checks)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    where = f"tag {report.tag} at commit {report.commit[:12]}"
    return rows, f"{where}: {summary}"


def code_quality(
    report: ReleaseVerification | None,
) -> tuple[tuple[dict[str, str], ...], str]:
    """The CI jobs release verify read from GitHub (its `code_quality`), and their source."""
    if report is None:
        return (), "not recorded: release verify's results were not given to the report"
    found = report.code_quality
    if found is None:
        return (), "not recorded: this release verify result has no code-quality section"
    rows = tuple(
        {"name": job.name, "state": job.state, "seconds": job.seconds, "url": job.url}
        for job in found.jobs
    )
    note = found.note
    if found.url:
        note += f" ([workflow run]({found.url}))"
    return rows, note


def _backup(
    config: Config,
    environment: str,
    record: ReleaseRecord,
    manifest: BackupManifest | None,
    verification: Verification | None,
) -> tuple[BackupSection | None, str]:
    if manifest is None:
        if record.no_backup_check:
            return None, "none: the deploy ran with --no-backup-check (recorded)"
        if record.backup_id:
            return None, f"backup {record.backup_id} is recorded but its manifest is gone"
        return None, "none recorded for this release"
    rows = manifest.row_counts or {}
    return (
        BackupSection(
            id=manifest.id,
            location=f"{config.backups.store} → {environment}/backups/{manifest.id}.dump",
            created=manifest.created,
            size=int(manifest.size),
            sha256=manifest.sha256,
            revision=manifest.revision,
            rows=sum(int(v) for v in rows.values()),
            tables=len(rows),
            verified=None if verification is None else verification.verified,
            verification_ok=None if verification is None else verification.ok,
            verification_detail="" if verification is None else _checks_of(verification),
        ),
        "",
    )


def _checks_of(verification: Verification) -> str:
    parts = [
        ("sha256", verification.sha256_ok),
        ("pg_restore --list", verification.listed_ok),
        ("test restore", verification.restore_ok),
        ("row counts", verification.row_counts_ok),
    ]
    shown = ", ".join(f"{label} {'✅' if ok else '❌'}" for label, ok in parts)
    detail = verification.detail or ""
    return f"{shown}; {detail}" if detail else shown


def _backup_named(record: ReleaseRecord, manifest: BackupManifest | None) -> str:
    if manifest is not None:
        return f"backup {manifest.id} (taken {manifest.created})"
    if record.backup_id:
        return f"backup {record.backup_id}"
    return "the backup taken before this deploy"


def rollback_plan(
    environment: str, expand_only: bool | None, previous_version: str | None, backup: str
) -> tuple[str, str]:
    """The command that rolls a release back to `previous_version`, and what it does to the
    data: without a restore for an expand-only release (every write is kept), else with
    --restore-db, which drops every write made since `backup` was taken."""
    if previous_version is None:
        return "", "no earlier release is recorded in this environment: nothing to roll back to"
    command = f"deploytools rollback --env {environment} --to {previous_version}"
    if expand_only is True:
        return command, (
            f"the release's migrations only add schema (expand-only), so {previous_version} "
            "runs on the new database as it is: no restore, no write is lost"
        )
    why = (
        "the release's migrations are not expand-only"
        if expand_only is False
        else "the release did not declare its migrations expand-only"
    )
    return f"{command} --restore-db", (
        f"{why}: the rollback restores {backup}, which drops every write made since it was "
        "taken (the rows it would drop are shown and confirmed first)"
    )


def _span(started: str | None, finished: str | None) -> float | None:
    if not started or not finished:
        return None
    return (utc_time(finished) - utc_time(started)).total_seconds()


def _suite_row(step: runbook.Step, report: SuiteRun | None) -> StepRow:
    if report is None:
        return StepRow(
            step.name, step.title, step.runbook_step, "not recorded", None, "no results given"
        )
    counts: dict[str, int] = {}
    for result in report.results:
        counts[result.verdict] = counts.get(result.verdict, 0) + 1
    detail = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no checks"
    if report.rolled_back:
        detail += "; breached: " + "; ".join(report.breaches) + "; rolled back"
    status = VERDICT_STATUS.get(report.verdict, "not recorded")
    span = _span(report.started, report.finished)
    return StepRow(step.name, step.title, step.runbook_step, status, span, detail)


def _steps(a: _Around) -> tuple[StepRow, ...]:
    record = a.record
    rows: list[StepRow] = []
    for step in (*runbook.STEPS, runbook.ROLLBACK):
        env = step.environment
        if step is runbook.ROLLBACK:
            row = _rollback_row(step, a)
        elif step.name == "verify-release":
            row = _verify_release_row(step, a.evidence.release_verify)
        elif step.name == "build-image":
            image = record.image
            status = "passed" if "@sha256:" in image or record.image_id else "not recorded"
            detail = image if "@sha256:" in image else f"{image} ({record.image_id})"
            row = StepRow(step.name, step.title, step.runbook_step, status, None, detail)
        elif step.name.startswith("deploy-") and env != a.environment:
            row = _other_deploy_row(step, a.staging_record)
        elif step.command[0] in ("smoke", "validate", "verify", "monitor"):
            row = _suite_row(step, a.evidence.suites.get((str(env), step.command[0])))
        elif step.approval:
            row = StepRow(
                step.name,
                step.title,
                step.runbook_step,
                "passed",
                None,
                f"approved by {record.approved_by}"
                if record.approved_by
                else f"approved; the deploy ran as {record.who}",
            )
        elif step.name.startswith("backup-"):
            row = _backup_row(step, a)
        elif step.name.startswith("migrate-"):
            row = _migrate_row(step, a)
        else:  # the deploy of this environment
            status = OUTCOME_STATUS.get(record.outcome, record.outcome)
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in record.timings.items())
            detail = (record.error or "") or (f"phases: {phases}" if phases else "")
            if record.kind == "deploy":
                detail = f"{record.strategy}; {detail}" if detail else record.strategy
            span = _span(record.started, record.finished)
            row = StepRow(step.name, step.title, step.runbook_step, status, span, detail)
        if env in (a.environment, None) or step.name.endswith("-staging"):
            rows.append(row)
    return tuple(rows)


def _rollback_row(step: runbook.Step, a: _Around) -> StepRow:
    if a.rollback is None and a.record.outcome != "rolled-back":
        return StepRow(step.name, step.title, step.runbook_step, "not run", None, "")
    done = a.rollback or a.record
    status = OUTCOME_STATUS.get(done.outcome, "passed")
    detail = f"to {done.image}"
    if a.rollback is not None:
        span = _span(a.rollback.started, a.rollback.finished)
    else:
        span = a.record.timings.get("rollback")
    return StepRow(step.name, step.title, step.runbook_step, status, span, detail)


def _verify_release_row(step: runbook.Step, report: ReleaseVerification | None) -> StepRow:
    if report is None:
        return StepRow(step.name, step.title, step.runbook_step, "not recorded", None, "no results")
    failed = [c for c in report.checks if c.status == "failed"]
    status = "failed" if failed else "passed"
    detail = f"{len(report.checks)} checks, {len(failed)} failed"
    span = _span(report.started, report.finished)
    return StepRow(step.name, step.title, step.runbook_step, status, span, detail)


def _other_deploy_row(step: runbook.Step, staging: ReleaseRecord | None) -> StepRow:
    if staging is None:
        return StepRow(
            step.name,
            step.title,
            step.runbook_step,
            "not recorded",
            None,
            f"{step.environment}'s history was not read",
        )
    status = OUTCOME_STATUS.get(staging.outcome, "not recorded")
    detail = f"release record {staging.id} of {step.environment}"
    span = _span(staging.started, staging.finished)
    return StepRow(step.name, step.title, step.runbook_step, status, span, detail)


def _backup_row(step: runbook.Step, a: _Around) -> StepRow:
    if a.manifest is None:
        status = "not run" if a.record.no_backup_check else "not recorded"
        return StepRow(step.name, step.title, step.runbook_step, status, None, "")
    ok = None if a.verification is None else a.verification.ok
    status = {None: "inconclusive", True: "passed", False: "failed"}[ok]
    detail = f"{a.manifest.id}, " + ("verified" if ok else "not verified")
    # The deploy's own backup phase, when it took it; a backup job's run is not timed anywhere
    # (its manifest and verification times are in the log).
    span = a.record.timings.get("backup") if a.migration is None else None
    return StepRow(step.name, step.title, step.runbook_step, status, span, detail)


def _migrate_row(step: runbook.Step, a: _Around) -> StepRow:
    # Its own run (`migrate`, recorded before the deploy), else the deploy's migration.
    done = a.migration or a.record
    before, after = done.revision_before, done.revision_after
    if done.outcome in ("failed", "interrupted"):
        status = "failed"
    elif after:
        status = "passed"
    else:
        status = "not recorded"
    where = f"record {done.id}" if a.migration else "during the deploy"
    detail = f"revision {before or 'none'} → {after or '?'} ({where})"
    span = done.timings.get("migrate")
    return StepRow(step.name, step.title, step.runbook_step, status, span, detail)


def metric_sources(config: Config) -> dict[str, list[str]]:
    """The names of the checks (and prefixes, ending in a space) that measure each metric."""
    checks = config.checks
    sources: dict[str, list[str]] = {key: [] for key, _, _ in METRICS}
    for probe in checks.probes:
        if probe.budget in sources:
            sources[probe.budget].append(probe.name)
    health = health_route_latency(config)
    for latency in checks.latency:
        if latency.threshold in sources and latency.name not in health:
            sources[latency.threshold].append(latency.name)
    for rule in checks.metrics:
        if rule.threshold in sources:
            sources[rule.threshold].append(rule.name)
    if checks.database is not None:
        sources["database_latency_ms"].append("database connected")
    if checks.monitor.container_stats:
        sources["cpu_percent"].append("cpu ")
        sources["memory_mb"].append("memory ")
    return sources


def health_route_latency(config: Config) -> list[str]:
    """Latency checks on a health route (a probe's path budgeted against health_ms, or the
    database check's): a health route's speed is not the API's, so they fill no row but
    Health Endpoint's."""
    checks = config.checks
    paths = {p.path for p in checks.probes if p.budget == "health_ms"}
    if checks.database is not None:
        paths.add(checks.database.path)
    return [
        lat.name for lat in checks.latency if lat.path in paths and lat.threshold != "health_ms"
    ]


def _metrics(config: Config, environment: str, evidence: Evidence) -> tuple[MetricRow, ...]:
    sources = metric_sources(config)
    # The latest and longest look at the environment first.
    suites = [
        (suite, evidence.suites[(environment, suite)])
        for suite in ("monitor", "verify", "validate", "smoke")
        if (environment, suite) in evidence.suites
    ]
    rows = []
    routes = {lat.name: f"{lat.method} {lat.path}" for lat in config.checks.latency}
    on_health = health_route_latency(config)
    thresholds = dataclasses.asdict(config.thresholds)
    for key, label, target_format in METRICS:
        target = target_format.format(thresholds[key])
        names = sources[key]
        found: list[tuple[str, CheckRow]] = []
        for suite, report in suites:
            found = [
                (suite, r)
                for r in report.results
                if any(r.name.startswith(n) if n.endswith(" ") else r.name == n for n in names)
            ]
            if found:
                break
        if not names:
            skipped = [
                lat.name
                for lat in config.checks.latency
                if lat.threshold == key and lat.name in on_health
            ]
            why = (
                f"no check measures it ({', '.join(skipped)} times a health route, not the API)"
                if skipped
                else "no check measures it"
            )
            rows.append(MetricRow(label, target, "not measured", "not measured", why))
            continue
        if not found:
            why = "no results given" if not suites else "its checks did not run"
            rows.append(MetricRow(label, target, "not measured", "not measured", why))
            continue
        suite, worst = min(found, key=lambda f: _VERDICT_RANK.get(f[1].verdict, 0))
        status = {"pass": "met", "fail": "missed"}.get(worst.verdict, "inconclusive")
        # What it was measured on: a latency check's route says whether it is the API's speed.
        route = routes.get(worst.name)
        source = f"{worst.name} on {route} ({suite})" if route else f"{worst.name} ({suite})"
        rows.append(MetricRow(label, target, worst.measured, status, source))
    return tuple(rows)


def _log(a: _Around) -> tuple[LogEntry, ...]:
    environment, record = a.environment, a.record
    entries: list[LogEntry] = []

    def add(at: str | None, text: str) -> None:
        if at:
            entries.append(LogEntry(utc_time(at).strftime("%Y-%m-%dT%H:%M:%SZ"), text))

    verified = a.evidence.release_verify
    if verified is not None:
        _, summary = _verification(verified)
        add(verified.started, f"release verification of tag {verified.tag} began")
        add(verified.finished, f"release verification of {summary}")
    staging = a.staging_record
    if staging is not None:
        add(staging.started, f"staging deploy of {staging.image} began")
        add(staging.finished, f"staging deploy {staging.outcome} (record {staging.id})")
    for (env, suite), report in a.evidence.suites.items():
        if env != environment and env != runbook.STAGING:
            continue
        add(report.started, f"{suite} on {env} began")
        count = len(report.results)
        add(report.finished, f"{suite} on {env}: {report.verdict} ({count} checks)")
    manifest = a.manifest
    if manifest is not None:
        add(
            manifest.created,
            f"backup {manifest.id} taken: {size_text(int(manifest.size))}, "
            f"sha256 {manifest.sha256[:16]}…, revision {manifest.revision}",
        )
    if a.verification is not None:
        result = "verified" if a.verification.ok else "FAILED verification"
        add(a.verification.verified, f"backup {a.verification.backup_id} {result}")
    migration = a.migration
    if migration is not None:
        add(migration.started, f"migration by {migration.image} began")
        add(
            migration.finished,
            f"migration {migration.outcome}: revision "
            f"{migration.revision_before or 'none'} → {migration.revision_after}"
            + (f" ({migration.error})" if migration.error else ""),
        )
    add(
        record.started,
        f"{record.kind} of {record.image} to {environment} began ({record.who})",
    )
    if record.outside_window:
        add(record.started, f"outside the deploy windows: {record.outside_window}")
    if record.kind == "deploy" and record.strategy_reason:
        add(record.started, f"strategy: {strategy_text(record)}")
    if record.approved_by:
        add(record.started, f"approved by {record.approved_by}")
    if record.maintenance:
        add(record.started, record.maintenance)
    if record.revision_after and record.revision_after != record.revision_before:
        add(
            record.finished or record.started,
            f"database at revision {record.revision_after} "
            f"(was {record.revision_before or 'none'})",
        )
    for note in record.notes:
        add(record.finished or record.started, f"note: {note}")
    if record.error:
        add(record.finished or record.started, f"error: {record.error}")
    add(record.finished, f"{record.kind} {record.outcome}")
    if a.rollback is not None:
        add(a.rollback.started, f"rollback to {a.rollback.image} began ({a.rollback.who})")
        add(a.rollback.finished, f"rollback {a.rollback.outcome}")
    entries.sort(key=lambda e: e.at)  # stable: same-second entries keep their order
    return tuple(entries)
