"""What `release verify` reports: one result per check, and the report of a tag."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from deploytools.errors import CheckFailed
from deploytools.github import CiJob

#: The environment a pre-release never goes to.
PRODUCTION = "production"

Verdict = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """One check of a release: its name, passed/failed/skipped, and why."""

    name: str
    verdict: Verdict
    reason: str

    @property
    def failed(self) -> bool:
        return self.verdict == "failed"


@dataclass(frozen=True)
class CodeQuality:
    """The code-quality gate's run on the tagged commit (the runbook's "Code Quality Status"):
    each job of the CI workflow and its result, or why there is none."""

    note: str
    jobs: tuple[CiJob, ...] = ()
    url: str = ""


class CheckList:
    """The failed checks of a report and whether there are none (release and image verify)."""

    checks: tuple[CheckResult, ...]

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.failed)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class ReleaseReport(CheckList):
    """What `release verify` found about one tag."""

    tag: str
    version: str
    commit: str
    target_env: str
    repository: str
    source_dir: str
    checks: tuple[CheckResult, ...]
    previous_tag: str | None = None
    #: None when the migrations could not be linted; True when the release only adds schema.
    expand_only: bool | None = None
    migration_findings: tuple[str, ...] = field(default=())
    #: Where the migration lint ran: "image REF" (an image of the release existed), or "build"
    #: (no image yet: `image build` lints the image it builds and labels it with the verdict).
    migration_lint_at: str = ""
    code_quality: CodeQuality = field(default_factory=lambda: CodeQuality("not read"))
    #: When the verification ran (UTC, ISO 8601): the report's duration of the step.
    started: str = ""
    finished: str = ""

    def raise_if_failed(self) -> None:
        """CheckFailed naming every failed check, when any failed."""
        if self.failed:
            names = ", ".join(c.name for c in self.failed)
            raise CheckFailed(
                f"release {self.tag} failed {len(self.failed)} check(s): {names}",
                untouched="nothing was built or deployed",
                hint="fix what each failed check names, then tag again (or move the tag) and rerun",
                facts={
                    "tag": self.tag,
                    "failed": [c.name for c in self.failed],
                    "report": dataclasses.asdict(self),
                },
            )


def check_passed(name: str, reason: str) -> CheckResult:
    return CheckResult(name, "passed", reason)


def check_failed(name: str, reason: str) -> CheckResult:
    return CheckResult(name, "failed", reason)


def check_skipped(name: str, reason: str) -> CheckResult:
    return CheckResult(name, "skipped", reason)
