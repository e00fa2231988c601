"""What a check says: a verdict, what was measured, against which threshold, and why."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


class Verdict(enum.StrEnum):
    """Three answers, not two: a check that could not show the release good does not pass."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome, as printed on one line and stored in the release record.

    :param name: what was checked, naming the route or metric ("rbac viewer POST /users").
    :param verdict: pass, fail or inconclusive.
    :param measured: the value seen, with its unit and sample count where it has one.
    :param threshold: what it was held against ("< 100 ms", "status 403").
    :param detail: why it failed or was inconclusive, in words; empty when it passed.
    :param data: the numbers behind `measured`, for --json and the record.
    """

    name: str
    verdict: Verdict
    measured: str
    threshold: str
    detail: str = ""
    data: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def line(self) -> str:
        verdict = self.verdict.value.upper()
        text = f"{verdict:<12} {self.name}: {self.measured} (want {self.threshold})"
        return f"{text}: {self.detail}" if self.detail else text


def overall(results: Iterable[CheckResult]) -> Verdict:
    """Fail if any failed; else inconclusive if any was; pass only when every check passed."""
    verdicts = {r.verdict for r in results}
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    if Verdict.INCONCLUSIVE in verdicts or not verdicts:
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(title: str, results: Sequence[CheckResult]) -> str:
    """The results as a GitHub-flavoured Markdown table, for $GITHUB_STEP_SUMMARY."""
    icon = {
        Verdict.PASS: "✅ pass",
        Verdict.FAIL: "❌ fail",
        Verdict.INCONCLUSIVE: "⚠️ inconclusive",
    }
    lines = [
        f"### {title}: {overall(results).value}",
        "",
        "| check | verdict | measured | threshold | detail |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        cells = (r.name, icon[r.verdict], r.measured, r.threshold, r.detail)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
