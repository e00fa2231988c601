"""`deploytools report`: the runbook document of one release, filled in with what happened.

The runbook (production-deployment-v1.15.2.md) is a form: verification summary, steps with their
status, a table of success metrics, the backup's details, the rollback command, a log. This step
fills it from the evidence the other steps left:

- the environment's release record (deploytools/store/): who, when, image, previous release,
  backup, Alembic revisions, phase timings, outcome; and the records around it (the `migrate`
  record of the same image that ran before the deploy, a rollback of it, the previous release,
  staging's record of the same image when that engine can be reached);
- the backup's manifest and its last verification;
- the JSON results (`--json` output) of release verify, smoke, validate, verify and monitor,
  when given; else the check results those commands saved in the release records.

One module per seam:

    evidence.py  the checks' results (files or records) read into typed records
    document.py  the document built from typed records (pure)
    render.py    the document as Markdown (under 1 MiB, a step summary's limit) and JSON
    gather.py    reading the records and the evidence from the target (I/O)
"""

from __future__ import annotations

from deploytools.steps.report.document import (
    METRICS,
    BackupSection,
    LogEntry,
    MetricRow,
    ReleaseDocument,
    StepRow,
    build_document,
    code_quality,
    contacts_markdown,
    metric_sources,
    newest_release,
    rollback_plan,
    strategy_text,
    utc_time,
)
from deploytools.steps.report.evidence import (
    CheckRow,
    Evidence,
    ReleaseVerification,
    SuiteRun,
    load_evidence,
    stored_evidence,
)
from deploytools.steps.report.gather import gather
from deploytools.steps.report.render import (
    LOG_LINES_KEPT,
    MARKDOWN_LIMIT,
    render_markdown,
    to_json,
)

__all__ = [
    "LOG_LINES_KEPT",
    "MARKDOWN_LIMIT",
    "METRICS",
    "BackupSection",
    "CheckRow",
    "Evidence",
    "LogEntry",
    "MetricRow",
    "ReleaseDocument",
    "ReleaseVerification",
    "StepRow",
    "SuiteRun",
    "build_document",
    "code_quality",
    "contacts_markdown",
    "gather",
    "load_evidence",
    "metric_sources",
    "newest_release",
    "render_markdown",
    "rollback_plan",
    "stored_evidence",
    "strategy_text",
    "to_json",
    "utc_time",
]
