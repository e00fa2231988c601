"""The pipeline record: what each step of one release's pipeline did, and what it handed on.

A re-run reads it to continue at the first step that has not passed; `render_summary` is its
own account as Markdown, put before the runbook report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from deploytools.pipeline import runbook

PASSED, FAILED, PENDING, RUNNING, SKIPPED = "passed", "failed", "pending", "running", "skipped"


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
    for step in (*runbook.STEPS, runbook.ROLLBACK):
        run = record.find(step.name) or StepRun(step.name)
        if step is runbook.ROLLBACK and run.status == PENDING:
            continue
        seconds = f"{run.seconds:.1f} s" if run.seconds is not None else "-"
        detail = run.detail.replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(
            f"| {step.name} | {_MARK.get(run.status, '')} {run.status} | {seconds} | {detail} |"
        )
    lines.append(f"\nTotal step time: {record.seconds:.1f} s\n")
    return "\n".join(lines)
