"""The incident report: what went wrong with a release and what was rolled back.

The runbook's "detailed rollback plan" ends with "create an incident report". This module builds
it from what deploytools recorded: the release record and its rollback record (the timeline,
the error, the database restore and the rows it dropped), the checks' JSON results (the check or
metric that failed, with its values), the app's logs around the failure (the log scan's stored
lines if the results hold them, otherwise the app container's recent logs, fetched now) and
[contacts]. What only people know is left as open questions, never invented.

`build` is a pure function of those inputs; `gather` reads them from the environment.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from deploytools import contacts
from deploytools.config import Config
from deploytools.context import StepContext
from deploytools.engine.errors import EngineAPIError
from deploytools.errors import UsageError
from deploytools.session import open_environment
from deploytools.steps import report as report_step

#: App log lines kept in the report (the newest).
LOG_LINES = 80
#: How far before the failure the fetched logs start.
LOG_LEAD = timedelta(minutes=10)

#: Outcomes of a deploy or migration that make an incident.
_FAILED = ("failed", "rolled-back", "interrupted")

OPEN_QUESTIONS = (
    "What did users see, from when to when (the timeline's times bound it)?",
    "Why did the release fail: what does the failed check or error above point to?",
    "Why did staging's smoke and validation not catch it?",
    "Were writes lost (see 'Writes dropped'), and must anyone be told or data be replayed?",
    "What change (test, check, threshold, runbook) stops this happening again, and who owns it?",
    "When is the fixed release planned, and who approves it?",
)


@dataclass(frozen=True)
class FailedCheck:
    suite: str
    name: str
    measured: str
    threshold: str
    detail: str


@dataclass(frozen=True)
class RolledBack:
    """What the rollback did. Absent (None) when the failed release was not rolled back."""

    record_id: str
    who: str
    outcome: str
    image_from: str
    image_to: str
    database: str  # restored from which backup, or why not
    volumes: str
    writes_dropped: str


@dataclass(frozen=True)
class IncidentReport:
    project: str
    environment: str
    release_id: str
    kind: str
    image: str
    version: str
    who: str
    started: str
    finished: str | None
    outcome: str
    error: str | None
    summary: str
    timeline: tuple[report_step.LogEntry, ...]
    failed_checks: tuple[FailedCheck, ...]
    rolled_back: RolledBack | None
    #: The previous release's image when it serves again without a rollback record.
    previous_serving: str | None
    logs: tuple[str, ...]
    logs_source: str
    contacts: tuple[str, ...]
    channels: tuple[str, ...]
    open_questions: tuple[str, ...] = field(default=OPEN_QUESTIONS)
    #: When the release was not rolled back: the command that would, and what it does to the
    #: data (report.rollback_plan); "" when there is nothing to roll back to.
    rollback_command: str = ""
    rollback_note: str = ""


def choose(
    records: Sequence[Mapping[str, Any]], release_id: str | None
) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    """(the failed release, its rollback record or None). Default: the newest incident, a
    rollback (by hand or automatic) or a deploy or migration that failed."""
    by_id = {str(r["id"]): r for r in records}
    if release_id is not None:
        chosen = by_id.get(release_id.zfill(4))
        if chosen is None:
            known = ", ".join(str(r["id"]) for r in records[-5:]) or "none"
            raise UsageError(
                f"no release {release_id} in this environment's history",
                untouched="nothing was rendered",
                hint=f"the latest: {known}",
            )
    else:
        candidates = [
            r
            for r in records
            if r.get("kind") == "rollback"
            or (r.get("kind") in ("deploy", "migrate") and r.get("outcome") in _FAILED)
        ]
        if not candidates:
            raise UsageError(
                "no failed release and no rollback in this environment's history",
                untouched="nothing was rendered",
                hint="name one with --release ID, or render the runbook report without --incident",
            )
        chosen = candidates[-1]
    if chosen.get("kind") == "rollback":
        failed = by_id.get(str(chosen.get("previous") or ""))
        if failed is None:
            raise UsageError(
                f"rollback {chosen['id']} names release {chosen.get('previous')}, which is gone",
                untouched="nothing was rendered",
            )
        return failed, chosen
    rollback = next(
        (
            r
            for r in records
            if r.get("kind") == "rollback" and str(r.get("previous") or "") == str(chosen["id"])
        ),
        None,
    )
    return chosen, rollback


def failed_checks(evidence: report_step.Evidence, environment: str) -> tuple[FailedCheck, ...]:
    """Every failed check result of the environment's suites (smoke ... monitor), with values."""
    found = []
    for (env, suite), run in sorted(evidence.suites.items()):
        if env != environment:
            continue
        for result in run.results:
            if result.verdict == "fail":
                found.append(
                    FailedCheck(
                        suite=suite,
                        name=result.name,
                        measured=result.measured,
                        threshold=result.threshold,
                        detail=result.detail,
                    )
                )
    return tuple(found)


def stored_log_lines(evidence: report_step.Evidence, environment: str) -> tuple[str, ...]:
    """Log lines the log scan stored in its results (data.lines or data.matches), if any."""
    lines: list[str] = []
    for (env, _suite), run in sorted(evidence.suites.items()):
        if env != environment:
            continue
        for result in run.results:
            extra = result.data
            if extra is not None:
                for key in ("lines", "matches"):
                    value = extra.get(key)
                    if isinstance(value, list):
                        lines.extend(str(v) for v in value)
    return tuple(lines)


#: The order the steps run their phases in (deploy, rolling deploy, rollback), for records that
#: kept only durations: the store writes `timings` with sorted keys.
PHASE_ORDER = (
    "backup",
    "restore",
    "stop",
    "swap",
    "migrate",
    "start",
    "healthy",
    "smoke",
    "switch",
    "drain",
    "safety backup (after serving)",
)


def phase_ends(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(when it ended, phase) for each timed phase, in the order they ran: the recorded end
    times, else start + the durations summed in the steps' order."""
    timings: Mapping[str, Any] = record.get("timings") or {}
    recorded: Mapping[str, Any] = record.get("phase_ends") or {}
    rank = {name: i for i, name in enumerate(PHASE_ORDER)}
    names = sorted(timings, key=lambda n: rank.get(n, len(rank)))
    try:
        at = report_step.utc_time(str(record["started"]))
    except (KeyError, ValueError):
        at = None
    ends: list[tuple[str, str]] = []
    for name in names:
        if at is not None:
            at += timedelta(seconds=float(timings[name]))
        if name in recorded:
            ends.append((str(recorded[name]), name))
        elif at is not None:
            ends.append((at.strftime("%Y-%m-%dT%H:%M:%SZ"), name))
    # Stable: phases ending in the same second keep the steps' order.
    return sorted(ends, key=lambda e: e[0])


def previous_serving(failed: Mapping[str, Any], rollback: Mapping[str, Any] | None) -> str | None:
    """The image of the release before `failed` when it serves again without a rollback of its
    own: a failed migration restarted it, or a rolling deploy failed before the switch. None
    when a rollback record says what happened, or nothing is known to serve."""
    if rollback is not None or failed.get("outcome") not in ("failed", "rolled-back"):
        return None
    previous = failed.get("previous_image")
    notes = [str(n) for n in failed.get("notes") or []]
    if not previous or any("did NOT come back" in n for n in notes):
        return None
    if any("serves again" in n or "still serves" in n for n in notes):
        return str(previous)
    return None


def _timeline(
    failed: Mapping[str, Any],
    rollback: Mapping[str, Any] | None,
    checks: Sequence[FailedCheck],
    evidence: report_step.Evidence,
    environment: str,
) -> tuple[report_step.LogEntry, ...]:
    entries: list[report_step.LogEntry] = []

    def add(at: Any, text: str) -> None:
        if at:
            entries.append(report_step.LogEntry(str(at), text))

    def phases(record: Mapping[str, Any]) -> None:
        for at, name in phase_ends(record):
            add(at, f"{record.get('kind')} phase {name} ended")

    kind = failed.get("kind", "deploy")
    add(
        failed.get("started"),
        f"{kind} {failed['id']} of {failed.get('image')} began ({failed.get('who')})",
    )
    if failed.get("outside_window"):
        add(failed.get("started"), f"outside the deploy windows: {failed['outside_window']}")
    phases(failed)
    for (env, suite), run in sorted(evidence.suites.items()):
        if env == environment and any(c.suite == suite for c in checks):
            add(run.finished or run.started, f"{suite} failed")
    if failed.get("error"):
        add(failed.get("finished") or failed.get("started"), f"error: {failed['error']}")
    for note in failed.get("notes") or []:
        add(failed.get("finished") or failed.get("started"), f"note: {note}")
    add(failed.get("finished"), f"{kind} {failed['id']} ended: {failed.get('outcome')}")
    if rollback is not None:
        add(
            rollback.get("started"),
            f"rollback {rollback['id']} to {rollback.get('image')} began ({rollback.get('who')})",
        )
        phases(rollback)
        add(rollback.get("finished"), f"rollback {rollback['id']} ended: {rollback.get('outcome')}")
    entries.sort(key=lambda e: e.at)
    return tuple(entries)  # fmt: skip


def _rolled_back(
    config: Config, failed: Mapping[str, Any], rollback: Mapping[str, Any] | None
) -> RolledBack | None:
    if rollback is None:
        return None
    notes = [str(n) for n in rollback.get("notes") or []]
    dropped = next((n for n in notes if " drops " in n), "")
    restored = rollback.get("restored_backup")
    if restored:
        database = (
            f"restored from backup {restored}: revision {rollback.get('revision_before') or 'none'}"
            f" -> {rollback.get('revision_after') or 'none'}"
        )
        writes = dropped or "not recorded (the rollback ran before deploytools recorded it)"
    else:
        database = (
            "not restored: the schema stayed at revision "
            f"{rollback.get('revision_after') or 'none'} ({_why_no_restore(failed)})"
        )
        writes = "none: no restore, every write was kept"
    volumes = "not part of the rollback (no [backups] volumes configured)"
    if config.backups.volumes:
        names = ", ".join(config.backups.volumes)
        volumes = (
            f"{names} restored from backup {restored} with the database"
            if restored
            else f"{names} kept as they were"
        )
    return RolledBack(
        record_id=str(rollback["id"]),
        who=str(rollback.get("who", "")),
        outcome=str(rollback.get("outcome", "")),
        image_from=str(rollback.get("previous_image") or failed.get("image") or ""),
        image_to=str(rollback.get("image", "")),
        database=database,
        volumes=volumes,
        writes_dropped=writes,
    )


def _why_no_restore(failed: Mapping[str, Any]) -> str:
    """Why a rollback of `failed` restored nothing, from its record rather than a guess."""
    if failed.get("expand_only") is True:
        return "the release's migrations were expand-only: the previous release runs on them"
    if failed.get("revision_before") == failed.get("revision_after"):
        return "the release's deploy changed no revision"
    return (
        "the release's migrations were not declared expand-only, and no restore was asked for: "
        "the previous release runs on the newer schema"
    )


def _plan(
    environment: str, failed: Mapping[str, Any], records: Sequence[Mapping[str, Any]]
) -> tuple[str, str]:
    """How to roll `failed` back, when it was not: the report's rollback plan."""
    previous = next((r for r in records if r.get("id") == failed.get("previous")), None)
    version = None
    if previous is not None:
        version = str(previous.get("version") or previous.get("image") or "") or None
    backup = f"backup {failed['backup_id']}" if failed.get("backup_id") else "its backup"
    expand_only = failed.get("expand_only")
    return report_step.rollback_plan(
        environment, expand_only if isinstance(expand_only, bool) else None, version, backup
    )


def build(
    config: Config,
    *,
    environment: str,
    records: Sequence[Mapping[str, Any]],
    release_id: str | None = None,
    evidence: report_step.Evidence | None = None,
    logs: Sequence[str] = (),
    logs_source: str = "",
) -> IncidentReport:
    """The incident report of `release_id` (default: the newest incident) from the records.

    :param logs: the app's logs around the failure, when the caller fetched them; lines the
        log scan stored in `evidence` are preferred.
    """
    evidence = evidence or report_step.Evidence()
    failed, rollback = choose(records, release_id)
    checks = failed_checks(evidence, environment)
    stored = stored_log_lines(evidence, environment)
    if stored:
        kept, source = stored, "stored by the log scan in the checks' results"
    else:
        kept, source = tuple(logs), logs_source or "no logs were available"
    output = tuple(str(line) for line in failed.get("failure_output") or [])
    if output:
        # The failed command's own words first: the app's logs rarely hold them.
        kept = (*output, *kept[-(LOG_LINES - len(output)) :]) if kept else output
        source = f"the failed command's output, kept in release record {failed['id']}; " + source
    rolled = _rolled_back(config, failed, rollback)
    serving = previous_serving(failed, rollback)
    command, note = (
        ("", "") if rolled is not None or serving else _plan(environment, failed, records)
    )
    kind = str(failed.get("kind", "deploy"))
    what = f"{kind} of {failed.get('image')} to {environment} (release {failed['id']})"
    if rolled is None and serving:
        summary = (
            f"The {what} ended {failed.get('outcome')}; no rollback was needed: the previous "
            f"release, {serving}, serves again."
        )
    elif rolled is None:
        summary = f"The {what} ended {failed.get('outcome')}; it was not rolled back."
    else:
        summary = (
            f"The {what} ended {failed.get('outcome')}; rollback {rolled.record_id} "
            f"({rolled.outcome}) brought back {rolled.image_to}. Database: {rolled.database}."
        )
    return IncidentReport(
        project=config.project.name,
        environment=environment,
        release_id=str(failed["id"]),
        kind=kind,
        image=str(failed.get("image", "")),
        version=str(failed.get("version") or "unknown"),
        who=str(failed.get("who", "")),
        started=str(failed.get("started", "")),
        finished=failed.get("finished"),
        outcome=str(failed.get("outcome", "")),
        error=failed.get("error"),
        summary=summary,
        timeline=_timeline(failed, rollback, checks, evidence, environment),
        failed_checks=checks,
        rolled_back=rolled,
        previous_serving=serving,
        logs=kept[-LOG_LINES:],
        logs_source=source,
        contacts=tuple(contacts.tier_lines(config.contacts)),
        channels=tuple(contacts.channel_lines(config.contacts)),
        rollback_command=command,
        rollback_note=note,
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _status(r: IncidentReport) -> str:
    if r.rolled_back is not None:
        return "rolled back"
    if r.previous_serving:
        return f"the previous release ({r.previous_serving}) serves again"
    return "NOT rolled back"


def render_markdown(r: IncidentReport) -> str:
    """The report as GitHub-flavoured Markdown (for the step summary, a file, a notice)."""
    out = [
        f"# Incident report: {r.project} {r.environment}, release {r.release_id} (v{r.version})",
        "",
        f"**Status**: {r.outcome} — {_status(r)}",
        "",
        r.summary,
        "",
        f"- **Image**: `{r.image}`",
        f"- **By**: {r.who}",
        f"- **Started**: {r.started}; **ended**: {r.finished or 'not recorded'}",
    ]
    if r.error:
        out.append(f"- **Error**: {r.error}")
    out += ["", "## Timeline (UTC)", ""]
    out += [f"- {e.at} — {e.text}" for e in r.timeline] or ["- (nothing recorded)"]
    out += ["", "## What failed", ""]
    if r.failed_checks:
        out += ["| suite | check | measured | threshold | detail |", "|---|---|---|---|---|"]
        out += [
            f"| {c.suite} | {_cell(c.name)} | {_cell(c.measured)} | {_cell(c.threshold)} | "
            f"{_cell(c.detail)} |"
            for c in r.failed_checks
        ]
    else:
        out.append(
            "No failed check result was given (pass the checks' --json outputs with --results); "
            + (f"the record's error: {r.error}" if r.error else "the record holds no error.")
        )
    out += ["", "## What was rolled back", ""]
    if r.rolled_back is None and r.previous_serving:
        out.append(
            f"No rollback ran: the previous release (`{r.previous_serving}`) serves again, "
            "started by the failed release's own recovery."
        )
    elif r.rolled_back is None:
        out.append("Nothing: the release was not rolled back.")
        if r.rollback_command:
            note = r.rollback_note[0].upper() + r.rollback_note[1:]
            out += [
                "",
                "To roll it back:",
                "",
                "```bash",
                r.rollback_command,
                "```",
                "",
                note + ".",
            ]
    else:
        b = r.rolled_back
        out += [
            f"- **Rollback**: record {b.record_id} by {b.who}, {b.outcome}",
            f"- **Image**: `{b.image_from}` → `{b.image_to}`",
            f"- **Database**: {b.database}",
            f"- **Volumes**: {b.volumes}",
            f"- **Writes dropped**: {b.writes_dropped}",
        ]
    out += ["", "## Logs around the failure", "", f"Source: {r.logs_source}.", ""]
    if r.logs:
        out += ["```", *r.logs, "```"]
    out += ["", "## Escalation contacts", ""]
    if r.contacts or r.channels:
        out += list(r.contacts) + [""] + [f"- {c}" for c in r.channels]
    else:
        out.append("_No contacts configured ([contacts] in deploy.toml)._")
    out += ["", "## Open questions (to fill in)", ""]
    out += [f"- [ ] {q}" for q in r.open_questions]
    return "\n".join(out).rstrip() + "\n"


def to_json(r: IncidentReport) -> dict[str, Any]:
    return dataclasses.asdict(r)


def _fetch_logs(session: Any, config: Config, failed: Mapping[str, Any]) -> tuple[list[str], str]:
    """The app containers' logs from LOG_LEAD before the failed release began (they may be the
    rolled-back release's, if its container still exists, or the serving one's)."""
    since: datetime | None = None
    try:
        since = report_step.utc_time(str(failed.get("started"))) - LOG_LEAD
    except ValueError:
        since = None
    lines: list[str] = []
    names: list[str] = []
    for container in session.platform.containers(config.project.app_service):
        try:
            raw = container.logs(timestamps=True, tail=LOG_LINES, since=since)
        except EngineAPIError:  # removed meanwhile: its lines are not there to show
            continue
        names.append(container.name)
        lines.extend(raw.decode("utf-8", "replace").splitlines())
    if not names:
        return [], "no app container exists now, and no log lines were stored"
    when = since.strftime("%Y-%m-%dT%H:%M:%SZ") if since else "the start"
    return lines, (
        f"fetched now from {', '.join(names)} (the newest {LOG_LINES} lines since {when}); "
        "the failed release's own container may be gone"
    )


def gather(
    ctx: StepContext,
    *,
    environment: str,
    release_id: str | None = None,
    results: Sequence[Path] = (),
) -> IncidentReport:
    """The incident report of `environment`, read from its history (and its engine's logs)."""
    config = ctx.config
    config.environment(environment)
    files: list[Path] = []
    for path in results:
        if path.exists():
            files.extend(sorted(path.rglob("*.json")) if path.is_dir() else [path])
    evidence = report_step.load_evidence(files)
    with open_environment(ctx, environment, read_only=True) as session:
        typed = session.history.releases()
        records = [dataclasses.asdict(r) for r in typed]
        failed, _ = choose(records, release_id)
        if not results:
            # No --results: what verify and monitor saved in the failed release's record.
            evidence = report_step.stored_evidence(next(r for r in typed if r.id == failed["id"]))
        logs: list[str] = []
        source = ""
        if not stored_log_lines(evidence, environment):
            logs, source = _fetch_logs(session, config, failed)
    return build(
        config,
        environment=environment,
        records=records,
        release_id=release_id,
        evidence=evidence,
        logs=logs,
        logs_source=source,
    )


def dumps(r: IncidentReport) -> str:
    return json.dumps(to_json(r), indent=2, sort_keys=True, default=str)
