"""The checks' results a report is filled from, read into typed records.

Two sources, one shape: the `--json` outputs of release verify, smoke, validate, verify and
monitor (the workflow downloads its jobs' artifacts into one directory; a failed check's output
holds its report under error.facts.report), and the summaries those commands saved in the
release records (suite_record.py), which have the shape of the suites' `--json` results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploytools.errors import UsageError
from deploytools.store.records import ReleaseRecord


@dataclass(frozen=True)
class CheckRow:
    """One check's result as a suite reported it."""

    name: str
    verdict: str  # pass | fail | inconclusive
    measured: str
    threshold: str
    detail: str
    #: The numbers behind it (samples, log lines), when the --json output kept them.
    data: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CheckRow:
        data = raw.get("data")
        return cls(
            name=str(raw.get("name", "")),
            verdict=str(raw.get("verdict", "")),
            measured=str(raw.get("measured", "")),
            threshold=str(raw.get("threshold", "")),
            detail=str(raw.get("detail", "")),
            data=data if isinstance(data, Mapping) else None,
        )


@dataclass(frozen=True)
class SuiteRun:
    """One run of smoke, validate, verify or monitor in one environment."""

    suite: str
    environment: str
    verdict: str
    results: tuple[CheckRow, ...]
    started: str | None = None
    finished: str | None = None
    #: monitor only: the rules that breached, and whether it rolled back.
    breaches: tuple[str, ...] = ()
    rolled_back: bool = False

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], suite: str) -> SuiteRun:
        return cls(
            suite=suite,
            environment=str(raw.get("environment")),
            verdict=str(raw.get("verdict", "")),
            results=tuple(CheckRow.from_json(r) for r in raw.get("results") or []),
            started=_text(raw.get("started")),
            finished=_text(raw.get("finished")),
            breaches=tuple(str(b) for b in raw.get("breaches") or []),
            rolled_back=bool(raw.get("rolled_back")),
        )


@dataclass(frozen=True)
class VerifyCheck:
    """One check of release verify."""

    name: str
    status: str  # passed | failed | ...
    detail: str


@dataclass(frozen=True)
class QualityJob:
    """One job of the code-quality gate on the tagged commit, as release verify read it."""

    name: str
    state: str
    seconds: str  # "" when not known
    url: str


@dataclass(frozen=True)
class CodeQuality:
    note: str
    url: str
    jobs: tuple[QualityJob, ...]


@dataclass(frozen=True)
class ReleaseVerification:
    """release verify's report: the tag, its commit and each check."""

    tag: str
    commit: str
    checks: tuple[VerifyCheck, ...]
    started: str | None = None
    finished: str | None = None
    #: None: this release verify result has no code-quality section.
    code_quality: CodeQuality | None = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ReleaseVerification:
        checks = tuple(
            VerifyCheck(
                name=str(c.get("name", "")),
                # release verify's JSON says verdict and reason (status and detail in older
                # files).
                status=str(c.get("verdict", c.get("status", ""))),
                detail=str(c.get("reason", c.get("detail", ""))),
            )
            for c in raw.get("checks", [])
        )
        found = raw.get("code_quality")
        quality = None
        if isinstance(found, Mapping):
            quality = CodeQuality(
                note=str(found.get("note", "")),
                url=str(found.get("url") or ""),
                jobs=tuple(
                    QualityJob(
                        name=str(job.get("name", "")),
                        state=str(job.get("state", "")),
                        seconds="" if job.get("seconds") is None else str(job.get("seconds")),
                        url=str(job.get("url", "")),
                    )
                    for job in found.get("jobs") or []
                    if isinstance(job, Mapping)
                ),
            )
        return cls(
            tag=str(raw.get("tag")),
            commit=str(raw.get("commit", "")),
            checks=checks,
            started=_text(raw.get("started")),
            finished=_text(raw.get("finished")),
            code_quality=quality,
        )


@dataclass
class Evidence:
    """The checks' results: release verify's report, and each suite's newest run by
    (environment, suite)."""

    release_verify: ReleaseVerification | None = None
    suites: dict[tuple[str, str], SuiteRun] = field(default_factory=dict)


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
            evidence.release_verify = ReleaseVerification.from_json(report)
        elif "suite" in report and "results" in report:
            run = SuiteRun.from_json(report, str(report["suite"]))
            evidence.suites[(run.environment, run.suite)] = run
        elif "samples" in report and "results" in report:
            run = SuiteRun.from_json(report, "monitor")
            evidence.suites[(run.environment, run.suite)] = run
    return evidence


def stored_evidence(*records: ReleaseRecord | None) -> Evidence:
    """The check results the records keep (their `checks`, suite_record.py): each suite's
    newest run per environment. Release verify is not kept there: it has no record yet."""
    evidence = Evidence()
    for record in records:
        for report in [] if record is None else record.checks:
            if isinstance(report, Mapping) and "suite" in report and "results" in report:
                run = SuiteRun.from_json(report, str(report["suite"]))
                evidence.suites[(run.environment, run.suite)] = run
    return evidence


def _report_of(data: Any) -> Mapping[str, Any] | None:
    if not isinstance(data, Mapping):
        return None
    if data.get("ok") is True and isinstance(data.get("result"), Mapping):
        return data["result"]  # type: ignore[no-any-return]
    facts = (data.get("error") or {}).get("facts") or {}
    report = facts.get("report") if isinstance(facts, Mapping) else None
    return report if isinstance(report, Mapping) else None


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
