"""`deploytools report`: the runbook document of one release, filled in with what happened.

The runbook (production-deployment-v1.15.2.md) is a form: verification summary, steps with their
status, a table of success metrics, the backup's details, the rollback command, a log. This step
fills it from the evidence the other steps left:

- the environment's release record (deploytools/store/): who, when, image, previous release, backup,
  Alembic revisions, phase timings, outcome; and the records around it (the `migrate` record of
  the same image that ran before the deploy, a rollback of it, the previous release, staging's
  record of the same image when that engine can be reached);
- the backup's manifest and its last verification;
- the JSON results (`--json` output) of release verify, smoke, validate, verify and monitor,
  when given (the workflow downloads its jobs' artifacts into one directory); else the check
  results those commands saved in the release records (staging's and this one's `checks`).

What no evidence covers says so ("not recorded", "not measured: no check measures it"), never
"TBD". `build_document` is pure (tests feed it a recorded release); `gather` reads the target.
The Markdown stays under 1 MiB, the limit of a GitHub step summary.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from deploytools import __version__, contacts, pipeline
from deploytools.config import Config
from deploytools.context import StepContext
from deploytools.errors import EnvironmentUnreachable, UsageError
from deploytools.github import GREEN_CONCLUSIONS
from deploytools.session import open_environment

#: GitHub refuses a step summary over 1 MiB; keep a margin for what else a job writes there.
MARKDOWN_LIMIT = 1024 * 1024 - 16 * 1024
LOG_LINES_KEPT = 400

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

_ICON = {
    "passed": "✅",
    "failed": "❌",
    "inconclusive": "⚠️",
    "rolled back": "↩️",
    "in progress": "⏳",
    "not run": "⏭️",
    "skipped": "⏭️",
    "not recorded": "—",
}
_OUTCOME_STATUS = {
    "succeeded": "passed",
    "failed": "failed",
    "rolled-back": "rolled back",
    "in-progress": "in progress",
    "interrupted": "failed",
}
_VERDICT_STATUS = {"pass": "passed", "fail": "failed", "inconclusive": "inconclusive"}
_VERDICT_RANK = {"fail": 0, "inconclusive": 1, "pass": 2}


# -- The document ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRow:
    name: str
    title: str
    runbook_step: int
    status: str  # a key of _ICON
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
    #: The escalation contacts and channels as Markdown ([contacts]); "" when none are set.
    contacts: str = ""
    #: The code-quality gate's jobs on the tagged commit (name, state, seconds, url), as
    #: release verify read them from GitHub, and where they come from (or why there are none).
    code_quality: tuple[dict[str, str], ...] = ()
    code_quality_note: str = "not recorded: release verify's results were not given to the report"

    @property
    def completed(self) -> bool:
        return self.outcome != "in-progress"


@dataclass
class Evidence:
    """The JSON results of the checks, by (environment, suite); release verify's report."""

    release_verify: Mapping[str, Any] | None = None
    suites: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)


def load_evidence(paths: Iterable[Path]) -> Evidence:
    """Read `--json` outputs of release verify, smoke, validate, verify and monitor (a failed
    check's output holds its report under error.facts.report). Other JSON files are ignored."""
    evidence = Evidence()
    for path in sorted(paths):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read check results {path}: {exc}",
                untouched="nothing was rendered",
                hint="pass the directory of the jobs' --json outputs, or none",
            ) from None
        report = _report_of(data)
        if report is None:
            continue
        if "tag" in report and "checks" in report:
            evidence.release_verify = report
        elif "suite" in report and "results" in report:
            evidence.suites[(str(report.get("environment")), str(report["suite"]))] = report
        elif "samples" in report and "results" in report:
            evidence.suites[(str(report.get("environment")), "monitor")] = report
    return evidence


def stored_evidence(*records: Mapping[str, Any] | None) -> Evidence:
    """The check results the records keep (their `checks`, check_record.py): each suite's
    newest run per environment. Release verify is not kept there: it has no record yet."""
    evidence = Evidence()
    for record in records:
        for report in (record or {}).get("checks") or []:
            if isinstance(report, Mapping) and "suite" in report and "results" in report:
                evidence.suites[(str(report.get("environment")), str(report["suite"]))] = report
    return evidence


def _report_of(data: Any) -> Mapping[str, Any] | None:
    if not isinstance(data, Mapping):
        return None
    if data.get("ok") is True and isinstance(data.get("result"), Mapping):
        return data["result"]  # type: ignore[no-any-return]
    facts = (data.get("error") or {}).get("facts") or {}
    report = facts.get("report") if isinstance(facts, Mapping) else None
    return report if isinstance(report, Mapping) else None


# -- Building it -------------------------------------------------------------------------------


def build_document(
    config: Config,
    *,
    environment: str,
    record: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    manifest: Mapping[str, Any] | None,
    verification: Mapping[str, Any] | None,
    evidence: Evidence,
    staging_record: Mapping[str, Any] | None = None,
) -> ReleaseDocument:
    """The document of `record`, from the evidence; pure.

    :param config: the configuration (thresholds, checks, backup store, project).
    :param environment: the environment of the record.
    :param record: the release record (ReleaseRecord as stored, a JSON object).
    :param records: every record of the environment, oldest first (previous release, rollbacks).
    :param manifest: the manifest of the record's backup, when it has one.
    :param verification: the backup's last verification, when there is one.
    :param evidence: the checks' JSON results.
    :param staging_record: staging's record of the same image, when staging could be read.
    """
    by_id = {str(r["id"]): r for r in records}
    previous = by_id.get(str(record.get("previous") or ""))
    previous_version = _version_of(previous) if previous else None
    rollback = next(
        (
            r
            for r in records
            if r.get("kind") == "rollback" and str(r.get("previous") or "") == str(record["id"])
        ),
        None,
    )
    migration = _migration_of(record, records)
    outcome = str(record.get("outcome", "in-progress"))
    status = _OUTCOME_STATUS.get(outcome, outcome)
    verification_rows, verification_note = _verification(evidence.release_verify)
    quality_rows, quality_note = _code_quality(evidence.release_verify)
    backup, backup_note = _backup(config, environment, record, manifest, verification)
    command, note = _rollback_command(environment, record, previous_version, manifest)
    return ReleaseDocument(
        environment=environment,
        project=config.project.name,
        record_id=str(record["id"]),
        kind=str(record.get("kind", "deploy")),
        version=_version_of(record) or "unknown",
        image=str(record.get("image", "")),
        who=str(record.get("who", "")),
        started=str(record.get("started", "")),
        finished=record.get("finished"),
        outcome=outcome,
        status=status if rollback is None else "rolled back",
        previous_version=previous_version,
        verification=verification_rows,
        verification_note=verification_note,
        steps=_steps(
            environment,
            record,
            migration,
            evidence,
            manifest,
            verification,
            staging_record,
            rollback,
        ),
        metrics=_metrics(config, environment, evidence),
        backup=backup,
        backup_note=backup_note,
        rollback_command=command,
        rollback_note=note,
        log=_log(
            environment,
            record,
            migration,
            evidence,
            manifest,
            verification,
            staging_record,
            rollback,
        ),
        contacts=_contacts_markdown(config),
        code_quality=quality_rows,
        code_quality_note=quality_note,
    )


def _contacts_markdown(config: Config) -> str:
    c = config.contacts
    configured = c.tiers or c.slack_channel or c.status_page or c.email_list
    return contacts.markdown(c) if configured else ""


def _migration_of(
    record: Mapping[str, Any], records: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The `migrate` run of the same image just before the deploy (the pipeline migrates in its
    own step, then deploys), if there was one since the release before."""
    since = str(record.get("previous") or "")
    found = None
    for other in records:
        other_id = str(other.get("id"))
        if other_id >= str(record["id"]):
            break
        if (
            other.get("kind") == "migrate"
            and other.get("image") == record.get("image")
            and other_id > since
        ):
            found = other
    return found


def newest_release(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The record a report is about by default: the newest deploy (a migration belongs to the
    deploy after it; a rollback shows in the report of the release it rolled back)."""
    deploys = [r for r in records if r.get("kind") == "deploy"]
    return deploys[-1] if deploys else records[-1]


def _version_of(record: Mapping[str, Any]) -> str | None:
    if record.get("version"):
        return str(record["version"])
    image = str(record.get("image", ""))
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    return tag.removeprefix("v") or None


def _verification(report: Mapping[str, Any] | None) -> tuple[tuple[dict[str, str], ...], str]:
    if report is None:
        return (), "not recorded: release verify's results were not given to the report"
    rows = tuple(
        {
            "name": str(c.get("name", "")),
            # release verify's JSON says verdict and reason (status and detail in older files).
            "status": str(c.get("verdict", c.get("status", ""))),
            "detail": str(c.get("reason", c.get("detail", ""))),
        }
        for c in report.get("checks", [])
    )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    where = f"tag {report.get('tag')} at commit {str(report.get('commit', ''))[:12]}"
    return rows, f"{where}: {summary}"


def _code_quality(report: Mapping[str, Any] | None) -> tuple[tuple[dict[str, str], ...], str]:
    """The CI jobs release verify read from GitHub (its `code_quality`), and their source."""
    if report is None:
        return (), "not recorded: release verify's results were not given to the report"
    found = report.get("code_quality")
    if not isinstance(found, Mapping):
        return (), "not recorded: this release verify result has no code-quality section"
    rows = tuple(
        {
            "name": str(job.get("name", "")),
            "state": str(job.get("state", "")),
            "seconds": "" if job.get("seconds") is None else str(job.get("seconds")),
            "url": str(job.get("url", "")),
        }
        for job in found.get("jobs") or []
        if isinstance(job, Mapping)
    )
    note = str(found.get("note", ""))
    if found.get("url"):
        note += f" ([workflow run]({found['url']}))"
    return rows, note


def _backup(
    config: Config,
    environment: str,
    record: Mapping[str, Any],
    manifest: Mapping[str, Any] | None,
    verification: Mapping[str, Any] | None,
) -> tuple[BackupSection | None, str]:
    if manifest is None:
        if record.get("no_backup_check"):
            return None, "none: the deploy ran with --no-backup-check (recorded)"
        if record.get("backup_id"):
            return None, f"backup {record['backup_id']} is recorded but its manifest is gone"
        return None, "none recorded for this release"
    rows = manifest.get("row_counts") or {}
    return (
        BackupSection(
            id=str(manifest["id"]),
            location=f"{config.backups.store} → {environment}/backups/{manifest['id']}.dump",
            created=str(manifest.get("created", "")),
            size=int(manifest.get("size", 0)),
            sha256=str(manifest.get("sha256", "")),
            revision=manifest.get("revision"),
            rows=sum(int(v) for v in rows.values()),
            tables=len(rows),
            verified=None if verification is None else str(verification.get("verified")),
            verification_ok=None if verification is None else bool(verification.get("ok")),
            verification_detail="" if verification is None else _checks_of(verification),
        ),
        "",
    )


def _checks_of(verification: Mapping[str, Any]) -> str:
    parts = [
        ("sha256", "sha256_ok"),
        ("pg_restore --list", "listed_ok"),
        ("test restore", "restore_ok"),
        ("row counts", "row_counts_ok"),
    ]
    shown = ", ".join(f"{label} {'✅' if verification.get(key) else '❌'}" for label, key in parts)
    detail = str(verification.get("detail") or "")
    return f"{shown}; {detail}" if detail else shown


def _rollback_command(
    environment: str,
    record: Mapping[str, Any],
    previous_version: str | None,
    manifest: Mapping[str, Any] | None,
) -> tuple[str, str]:
    if previous_version is None:
        return "", "no earlier release is recorded in this environment: nothing to roll back to"
    command = f"deploytools rollback --env {environment} --to {previous_version}"
    if record.get("expand_only") is True:
        return command, (
            f"the release's migrations only add schema, so {previous_version} runs on the new "
            "database as it is: no restore"
        )
    backup = f"backup {manifest['id']}" if manifest else "the backup taken before this deploy"
    why = (
        "the release's migrations are not expand-only"
        if record.get("expand_only") is False
        else "the release did not declare its migrations expand-only"
    )
    return f"{command} --restore-db", f"{why}: the rollback restores {backup}"


def _duration(report: Mapping[str, Any] | None) -> float | None:
    if report is None:
        return None
    started, finished = report.get("started"), report.get("finished")
    if not started or not finished:
        return None
    return (_time(str(finished)) - _time(str(started))).total_seconds()


def _suite_row(step: pipeline.Step, report: Mapping[str, Any] | None) -> StepRow:
    if report is None:
        return StepRow(
            step.name, step.title, step.runbook_step, "not recorded", None, "no results given"
        )
    results = list(report.get("results", []))
    counts: dict[str, int] = {}
    for result in results:
        verdict = str(result.get("verdict", ""))
        counts[verdict] = counts.get(verdict, 0) + 1
    detail = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no checks"
    if report.get("rolled_back"):
        detail += "; breached: " + "; ".join(report.get("breaches", [])) + "; rolled back"
    status = _VERDICT_STATUS.get(str(report.get("verdict", "")), "not recorded")
    return StepRow(step.name, step.title, step.runbook_step, status, _duration(report), detail)


def _record_span(record: Mapping[str, Any]) -> float | None:
    if not record.get("started") or not record.get("finished"):
        return None
    return (_time(str(record["finished"])) - _time(str(record["started"]))).total_seconds()


def _steps(
    environment: str,
    record: Mapping[str, Any],
    migration: Mapping[str, Any] | None,
    evidence: Evidence,
    manifest: Mapping[str, Any] | None,
    verification: Mapping[str, Any] | None,
    staging_record: Mapping[str, Any] | None,
    rollback: Mapping[str, Any] | None,
) -> tuple[StepRow, ...]:
    timings: Mapping[str, float] = record.get("timings") or {}
    outcome = str(record.get("outcome", "in-progress"))
    rows: list[StepRow] = []
    for step in (*pipeline.STEPS, pipeline.ROLLBACK):
        env = step.environment
        row: StepRow
        if step is pipeline.ROLLBACK:
            if rollback is None and outcome != "rolled-back":
                row = StepRow(step.name, step.title, step.runbook_step, "not run", None, "")
            else:
                done = rollback or record
                status = _OUTCOME_STATUS.get(str(done.get("outcome")), "passed")
                detail = f"to {done.get('image', '')}"
                span = _record_span(rollback) if rollback else timings.get("rollback")
                row = StepRow(step.name, step.title, step.runbook_step, status, span, detail)
        elif step.name == "verify-release":
            report = evidence.release_verify
            if report is None:
                row = StepRow(
                    step.name, step.title, step.runbook_step, "not recorded", None, "no results"
                )
            else:
                failed = [
                    c
                    for c in report.get("checks", [])
                    if c.get("verdict", c.get("status")) == "failed"
                ]
                status = "failed" if failed else "passed"
                detail = f"{len(report.get('checks', []))} checks, {len(failed)} failed"
                span = _duration(report)
                row = StepRow(step.name, step.title, step.runbook_step, status, span, detail)
        elif step.name == "build-image":
            image = str(record.get("image", ""))
            status = "passed" if "@sha256:" in image or record.get("image_id") else "not recorded"
            detail = image if "@sha256:" in image else f"{image} ({record.get('image_id', '')})"
            row = StepRow(step.name, step.title, step.runbook_step, status, None, detail)
        elif step.name.startswith("deploy-") and env != environment:
            if staging_record is None:
                row = StepRow(
                    step.name,
                    step.title,
                    step.runbook_step,
                    "not recorded",
                    None,
                    f"{env}'s history was not read",
                )
            else:
                status = _OUTCOME_STATUS.get(str(staging_record.get("outcome")), "not recorded")
                detail = f"release record {staging_record.get('id')} of {env}"
                span = _record_span(staging_record)
                row = StepRow(step.name, step.title, step.runbook_step, status, span, detail)
        elif step.command[0] in ("smoke", "validate", "verify", "monitor"):
            row = _suite_row(step, evidence.suites.get((str(env), step.command[0])))
        elif step.approval:
            row = StepRow(
                step.name,
                step.title,
                step.runbook_step,
                "passed",
                None,
                f"approved; the deploy ran as {record.get('who', '')}",
            )
        elif step.name.startswith("backup-"):
            if manifest is None:
                status = "not run" if record.get("no_backup_check") else "not recorded"
                row = StepRow(step.name, step.title, step.runbook_step, status, None, "")
            else:
                ok = None if verification is None else bool(verification.get("ok"))
                status = {None: "inconclusive", True: "passed", False: "failed"}[ok]
                detail = f"{manifest['id']}, " + ("verified" if ok else "not verified")
                # The deploy's own backup phase, when it took it; a backup job's run is not
                # timed anywhere (its manifest and verification times are in the log).
                span = timings.get("backup") if migration is None else None
                row = StepRow(step.name, step.title, step.runbook_step, status, span, detail)
        elif step.name.startswith("migrate-"):
            # Its own run (`migrate`, recorded before the deploy), else the deploy's migration.
            done = migration or record
            before, after = done.get("revision_before"), done.get("revision_after")
            done_outcome = str(done.get("outcome", ""))
            if done_outcome in ("failed", "interrupted"):
                status = "failed"
            elif after:
                status = "passed"
            else:
                status = "not recorded"
            where = f"record {done.get('id')}" if migration else "during the deploy"
            detail = f"revision {before or 'none'} → {after or '?'} ({where})"
            span = (done.get("timings") or {}).get("migrate")
            row = StepRow(step.name, step.title, step.runbook_step, status, span, detail)
        else:  # the deploy of this environment
            status = _OUTCOME_STATUS.get(outcome, outcome)
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
            detail = str(record.get("error") or "") or (f"phases: {phases}" if phases else "")
            span = _record_span(record)
            row = StepRow(step.name, step.title, step.runbook_step, status, span, detail)
        if env in (environment, None) or step.name.endswith("-staging"):
            rows.append(row)
    return tuple(rows)


def metric_sources(config: Config) -> dict[str, list[str]]:
    """The names of the checks (and prefixes, ending in a space) that measure each metric."""
    checks = config.checks
    sources: dict[str, list[str]] = {key: [] for key, _, _ in METRICS}
    for probe in checks.probes:
        if probe.budget in sources:
            sources[probe.budget].append(probe.name)
    for latency in checks.latency:
        if latency.threshold in sources:
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


def _metrics(config: Config, environment: str, evidence: Evidence) -> tuple[MetricRow, ...]:
    sources = metric_sources(config)
    # The latest and longest look at the environment first.
    suites = [
        (suite, evidence.suites[(environment, suite)])
        for suite in ("monitor", "verify", "validate", "smoke")
        if (environment, suite) in evidence.suites
    ]
    rows = []
    thresholds = dataclasses.asdict(config.thresholds)
    for key, label, target_format in METRICS:
        target = target_format.format(thresholds[key])
        names = sources[key]
        found: list[tuple[str, Mapping[str, Any]]] = []
        for suite, report in suites:
            found = [
                (suite, r)
                for r in report.get("results", [])
                if any(
                    str(r.get("name", "")).startswith(n) if n.endswith(" ") else r.get("name") == n
                    for n in names
                )
            ]
            if found:
                break
        if not names:
            rows.append(
                MetricRow(label, target, "not measured", "not measured", "no check measures it")
            )
            continue
        if not found:
            why = "no results given" if not suites else "its checks did not run"
            rows.append(MetricRow(label, target, "not measured", "not measured", why))
            continue
        suite, worst = min(found, key=lambda f: _VERDICT_RANK.get(str(f[1].get("verdict")), 0))
        status = {"pass": "met", "fail": "missed"}.get(str(worst.get("verdict")), "inconclusive")
        rows.append(
            MetricRow(
                label, target, str(worst.get("measured", "")), status, f"{worst['name']} ({suite})"
            )
        )
    return tuple(rows)


def _log(
    environment: str,
    record: Mapping[str, Any],
    migration: Mapping[str, Any] | None,
    evidence: Evidence,
    manifest: Mapping[str, Any] | None,
    verification: Mapping[str, Any] | None,
    staging_record: Mapping[str, Any] | None,
    rollback: Mapping[str, Any] | None,
) -> tuple[LogEntry, ...]:
    entries: list[LogEntry] = []

    def add(at: Any, text: str) -> None:
        if at:
            entries.append(LogEntry(_time(str(at)).strftime("%Y-%m-%dT%H:%M:%SZ"), text))

    verified = evidence.release_verify
    if verified is not None:
        _, summary = _verification(verified)
        add(verified.get("started"), f"release verification of tag {verified.get('tag')} began")
        add(verified.get("finished"), f"release verification of {summary}")
    if staging_record is not None:
        add(staging_record.get("started"), f"staging deploy of {staging_record.get('image')} began")
        add(
            staging_record.get("finished"),
            f"staging deploy {staging_record.get('outcome')} (record {staging_record.get('id')})",
        )
    for (env, suite), report in evidence.suites.items():
        if env != environment and env != pipeline.STAGING:
            continue
        add(report.get("started"), f"{suite} on {env} began")
        verdict = report.get("verdict", "")
        count = len(report.get("results", []))
        add(report.get("finished"), f"{suite} on {env}: {verdict} ({count} checks)")
    if manifest is not None:
        add(
            manifest.get("created"),
            f"backup {manifest['id']} taken: {_size(int(manifest.get('size', 0)))}, "
            f"sha256 {str(manifest.get('sha256', ''))[:16]}…, revision {manifest.get('revision')}",
        )
    if verification is not None:
        result = "verified" if verification.get("ok") else "FAILED verification"
        add(verification.get("verified"), f"backup {verification.get('backup_id')} {result}")
    if migration is not None:
        add(migration.get("started"), f"migration by {migration.get('image')} began")
        add(
            migration.get("finished"),
            f"migration {migration.get('outcome')}: revision "
            f"{migration.get('revision_before') or 'none'} → {migration.get('revision_after')}"
            + (f" ({migration['error']})" if migration.get("error") else ""),
        )
    add(
        record.get("started"),
        f"{record.get('kind', 'deploy')} of {record.get('image')} to {environment} began "
        f"({record.get('who')})",
    )
    if record.get("outside_window"):
        add(record.get("started"), f"outside the deploy windows: {record['outside_window']}")
    if record.get("revision_after") and record.get("revision_after") != record.get(
        "revision_before"
    ):
        add(
            record.get("finished") or record.get("started"),
            f"database at revision {record.get('revision_after')} "
            f"(was {record.get('revision_before') or 'none'})",
        )
    for note in record.get("notes") or []:
        add(record.get("finished") or record.get("started"), f"note: {note}")
    if record.get("error"):
        add(record.get("finished") or record.get("started"), f"error: {record['error']}")
    add(record.get("finished"), f"{record.get('kind', 'deploy')} {record.get('outcome')}")
    if rollback is not None:
        add(
            rollback.get("started"),
            f"rollback to {rollback.get('image')} began ({rollback.get('who')})",
        )
        add(rollback.get("finished"), f"rollback {rollback.get('outcome')}")
    entries.sort(key=lambda e: e.at)  # stable: same-second entries keep their order
    return tuple(entries)


# -- Rendering ---------------------------------------------------------------------------------


def _time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _when(text: str | None) -> str:
    return _time(text).strftime("%Y-%m-%d %H:%M:%S UTC") if text else "not recorded"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({size} bytes)"
        value /= 1024
    return f"{size} bytes"


def _cell(text: str, limit: int = 300) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_METRIC_ICON = {"met": "✅", "missed": "❌", "inconclusive": "⚠️", "not measured": "—"}


def render_markdown(document: ReleaseDocument) -> str:
    """The runbook document as GitHub-flavoured Markdown, under MARKDOWN_LIMIT bytes."""
    template = Template(
        resources.files("deploytools").joinpath("templates/runbook.md").read_text("utf-8")
    )
    markdown = _render(document, template, LOG_LINES_KEPT)
    keep = LOG_LINES_KEPT
    while len(markdown.encode()) > MARKDOWN_LIMIT and keep > 10:
        keep //= 2
        markdown = _render(document, template, keep)
    return markdown


def _render(document: ReleaseDocument, template: Template, log_lines: int) -> str:
    d = document
    status = d.status.upper()
    if d.verification:
        verification = (
            f"Release verification: {d.verification_note}\n\n"
            + _table(
                ("check", "status", "detail"),
                ((r["name"], f"{_ICON.get(_VERDICT_STATUS.get(r['status'], r['status']), '')} "
                  f"{r['status']}".strip(), r["detail"]) for r in d.verification),
            )
        )  # fmt: skip
    else:
        verification = f"Release verification: {d.verification_note}"
    verification += "\n\n" + _code_quality_markdown(d)
    steps = _table(
        ("step", "runbook", "status", "duration", "detail"),
        (
            (f"{s.name}: {s.title}", f"step {s.runbook_step}",
             f"{_ICON[s.status]} {s.status}", _seconds(s.duration_s), s.detail)
            for s in d.steps
        ),
    )  # fmt: skip
    metrics = _table(
        ("Metric", "Target", "Measured", "Status", "Measured by"),
        (
            (m.metric, m.target, m.measured, f"{_METRIC_ICON[m.status]} {m.status}", m.source)
            for m in d.metrics
        ),
    )
    if d.backup is None:
        backup = f"- **Database Backup**: {d.backup_note}"
    else:
        b = d.backup
        if b.verification_ok is None:
            verified = "not verified"
        else:
            mark = "✅ verified" if b.verification_ok else "❌ verification FAILED"
            verified = f"{mark} at {_when(b.verified)}: {b.verification_detail}"
        backup = "\n".join(
            [
                f"- **Database Backup**: `{b.id}`",
                f"- **Location**: `{b.location}`",
                f"- **Snapshot Time**: {_when(b.created)}",
                f"- **Backup Size**: {_size(b.size)}",
                f"- **Checksum (sha256)**: `{b.sha256}`",
                f"- **Alembic revision**: {b.revision or 'none'}",
                f"- **Rows**: {b.rows} in {b.tables} tables",
                f"- **Verification**: {verified}",
            ]
        )
    if d.rollback_command:
        rollback = f"```bash\n{d.rollback_command}\n```\n\n{_sentence(d.rollback_note)}"
    else:
        rollback = _sentence(d.rollback_note)
    if d.contacts:
        rollback += "\n\n### Escalation contacts\n\n" + d.contacts.rstrip()
    entries = list(d.log)
    if len(entries) > log_lines:
        dropped = len(entries) - log_lines
        entries = [
            *entries[: log_lines // 2],
            LogEntry(entries[log_lines // 2].at, f"… {dropped} entries left out …"),
            *entries[-(log_lines - log_lines // 2) :],
        ]
    log = "\n".join(f"[{_when(e.at)}] {e.text}" for e in entries) or "(no entries)"
    environment = d.environment.capitalize()
    return template.substitute(
        title=f"{environment} Deployment Execution - v{d.version}",
        # The pipeline's start: the first thing logged (staging's deploy), else this deploy's.
        started=_when(d.log[0].at if d.log else d.started),
        version=d.version,
        environment=environment,
        status=f"{_ICON.get(d.status, '')} **{status}**".strip(),
        record_line=f"{d.record_id} ({d.kind}), finished {_when(d.finished)}",
        image=d.image,
        who=d.who,
        verification=verification,
        steps=steps,
        metrics=metrics,
        backup=backup,
        rollback=rollback,
        log=log,
        tool_version=__version__,
        record_id=d.record_id,
        record_environment=d.environment,
    )


def _code_quality_markdown(d: ReleaseDocument) -> str:
    """The runbook's "Code Quality Status": each job of the gate with its result and time."""
    if not d.code_quality:
        return f"### Code Quality Status\n\n{_sentence(d.code_quality_note)}"
    green = all(r["state"] in GREEN_CONCLUSIONS for r in d.code_quality)
    rows = (
        (
            f"[{r['name']}]({r['url']})" if r["url"] else r["name"],
            f"{'✅' if r['state'] in GREEN_CONCLUSIONS else '❌'} {r['state']}",
            _seconds(float(r["seconds"])) if r["seconds"] else "—",
        )
        for r in d.code_quality
    )
    return (
        f"### {'✅' if green else '❌'} Code Quality Status\n\n{d.code_quality_note}\n\n"
        + _table(("job", "result", "duration"), rows)
    )


def to_json(document: ReleaseDocument) -> dict[str, Any]:
    data = dataclasses.asdict(document)
    data["rollback_command"] = document.rollback_command
    return data


# -- Reading the target ------------------------------------------------------------------------


def gather(
    ctx: StepContext,
    *,
    environment: str,
    release_id: str | None = None,
    results: Sequence[Path] = (),
) -> ReleaseDocument:
    """The document of `release_id` (default: the newest record) of `environment`.

    :param ctx: the step context.
    :param environment: the environment whose history holds the release.
    :param release_id: a release record id ("0007"); None: the newest.
    :param results: JSON result files, or directories of them, of the checks.
    """
    config = ctx.config
    config.environment(environment)
    files: list[Path] = []
    for path in results:
        if not path.exists():
            ctx.progress(f"report: no check results at {path}; left out")
            continue
        files.extend(sorted(path.rglob("*.json")) if path.is_dir() else [path])
    evidence = load_evidence(files) if results else None
    with open_environment(ctx, environment, read_only=True) as session:
        history = session.history
        records = [dataclasses.asdict(r) for r in history.releases()]
        if not records:
            raise UsageError(
                f"environment {environment} has no release records yet",
                untouched="nothing was rendered",
                hint=f"deploy first: `deploytools deploy --env {environment} --image IMAGE`",
            )
        if release_id is None:
            record = newest_release(records)
        else:
            found = [r for r in records if str(r["id"]) == release_id.zfill(4)]
            if not found:
                known = ", ".join(str(r["id"]) for r in records[-5:])
                raise UsageError(
                    f"no release {release_id} in environment {environment}",
                    untouched="nothing was rendered",
                    hint=f"the latest: {known}; `deploytools history --env {environment}`",
                )
            record = found[0]
        manifest = verification = None
        if record.get("backup_id"):
            backup_id = str(record["backup_id"])
            try:
                manifest = dataclasses.asdict(history.manifest(backup_id))
            except UsageError:
                manifest = None
            checked = history.verification(backup_id)
            verification = None if checked is None else dataclasses.asdict(checked)
    staging_record = None
    if environment != pipeline.STAGING and pipeline.STAGING in config.environments:
        staging_record = _staging_record(ctx, str(record.get("image", "")))
    if evidence is None:
        # No --results: what smoke, validate, verify and monitor saved in the records.
        evidence = stored_evidence(staging_record, record)
    return build_document(
        config,
        environment=environment,
        record=record,
        records=records,
        manifest=manifest,
        verification=verification,
        evidence=evidence,
        staging_record=staging_record,
    )


def _staging_record(ctx: StepContext, image: str) -> Mapping[str, Any] | None:
    """Staging's newest deploy of `image`, when staging's engine can be reached from here."""
    try:
        with open_environment(ctx, pipeline.STAGING, read_only=True) as session:
            for record in reversed(session.history.releases()):
                if record.kind == "deploy" and record.image == image:
                    return dataclasses.asdict(record)
    except EnvironmentUnreachable:
        ctx.progress("report: staging cannot be reached from here; its deploy is left out")
    return None
