"""The runbook document as GitHub-flavoured Markdown (templates/runbook.md), and as JSON.

The Markdown stays under 1 MiB, the limit of a GitHub step summary: the log is cut in its
middle until it fits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from importlib import resources
from string import Template
from typing import Any

from deploytools import __version__
from deploytools.github import GREEN_CONCLUSIONS
from deploytools.sizes import size_text
from deploytools.steps.report.document import (
    VERDICT_STATUS,
    LogEntry,
    ReleaseDocument,
    utc_time,
)

#: GitHub refuses a step summary over 1 MiB; keep a margin for what else a job writes there.
MARKDOWN_LIMIT = 1024 * 1024 - 16 * 1024
LOG_LINES_KEPT = 400

ICON = {
    "passed": "✅",
    "failed": "❌",
    "inconclusive": "⚠️",
    "rolled back": "↩️",
    "in progress": "⏳",
    "not run": "⏭️",
    "skipped": "⏭️",
    "not recorded": "—",
}
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


def to_json(document: ReleaseDocument) -> dict[str, Any]:
    data = dataclasses.asdict(document)
    data["rollback_command"] = document.rollback_command
    return data


def _when(text: str | None) -> str:
    return utc_time(text).strftime("%Y-%m-%d %H:%M:%S UTC") if text else "not recorded"


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


def _render(document: ReleaseDocument, template: Template, log_lines: int) -> str:
    d = document
    status = d.status.upper()
    if d.verification:
        verification = (
            f"Release verification: {d.verification_note}\n\n"
            + _table(
                ("check", "status", "detail"),
                ((r["name"], f"{ICON.get(VERDICT_STATUS.get(r['status'], r['status']), '')} "
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
             f"{ICON[s.status]} {s.status}", _seconds(s.duration_s), s.detail)
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
                f"- **Backup Size**: {size_text(b.size)}",
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
        status=f"{ICON.get(d.status, '')} **{status}**".strip(),
        record_line=f"{d.record_id} ({d.kind}), finished {_when(d.finished)}",
        image=d.image,
        strategy=d.strategy or "not recorded",
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
