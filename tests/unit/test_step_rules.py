"""The rules the steps own, as the CLI and `pipeline run` both apply them: a suite's verdict, the
watch's breach, and the backup that is verified before retention deletes anything."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.checks.results import CheckResult, Verdict
from deploytools.errors import CheckFailed
from deploytools.steps import backup as backup_step
from deploytools.steps.check_suites import SuiteReport
from deploytools.steps.monitor import MonitorReport

P, F, INC = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE


def suite(*verdicts: Verdict) -> SuiteReport:
    results = tuple(
        CheckResult(f"check {i}", v, "m", "t", f"why {i}") for i, v in enumerate(verdicts)
    )
    worst = F if F in verdicts else (INC if INC in verdicts else P)
    return SuiteReport("staging", "smoke", "http://x", "a", "b", worst, results)


def test_a_suite_that_passed_raises_nothing() -> None:
    suite(P, P).raise_if_failed()


def test_a_failed_check_fails_the_suite_even_when_inconclusive_ones_are_allowed() -> None:
    with pytest.raises(CheckFailed, match=r"smoke on staging: 1 of 3 checks failed: check 1") as e:
        suite(P, F, INC).raise_if_failed(allow_inconclusive=True)
    assert e.value.facts["report"]["verdict"] == "fail"
    assert e.value.exit_code == 1


def test_an_inconclusive_check_fails_the_suite_unless_allowed() -> None:
    with pytest.raises(CheckFailed, match="1 of 2 checks were inconclusive: check 1"):
        suite(P, INC).raise_if_failed()
    suite(P, INC).raise_if_failed(allow_inconclusive=True)


def watch(breaches: tuple[str, ...] = (), regressions: tuple[str, ...] = (), **kw: Any) -> Any:
    return MonitorReport(
        environment="production", started="a", finished="b", duration_s=60, interval_s=15,
        consecutive_failures=3, failure_limit=5, samples=4,
        verdict=F if breaches or regressions else P, breaches=breaches, results=(),
        regressions=regressions, **kw,
    )  # fmt: skip


def test_a_breach_fails_the_watch_and_says_whether_it_rolled_back() -> None:
    watch().raise_if_failed()
    with pytest.raises(CheckFailed, match=r"breach \(rolled back\): health") as rolled:
        watch(("health: failed 3 samples in a row",), rolled_back=True).raise_if_failed()
    assert rolled.value.facts["rolled_back"] is True
    assert rolled.value.untouched == "the environment was rolled back"
    with pytest.raises(CheckFailed, match=r"breach \(not rolled back\)") as kept:
        watch(("health: failed 3 samples in a row",)).raise_if_failed()
    assert kept.value.untouched == "the environment was left as it is"


def test_a_regression_against_the_baseline_fails_the_watch() -> None:
    with pytest.raises(CheckFailed, match="regression against the release's baseline: p95"):
        watch(regressions=("p95: 40% slower",)).raise_if_failed()


class _Backups:
    """The backup step's parts, writing down what ran (their own tests cover what they do)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, verify_fails: bool = False) -> None:
        self.calls: list[str] = []
        manifest = SimpleNamespace(id="b2")

        def verification(backup_id: str) -> Any:
            self.calls.append(f"read the verification of {backup_id}")
            return SimpleNamespace(ok=True)

        @contextlib.contextmanager
        def open_environment(ctx: Any, environment: str, **kw: Any) -> Iterator[Any]:
            yield SimpleNamespace(
                environment=environment, history=SimpleNamespace(verification=verification)
            )

        def create_in(session: Any, *, reason: str, verify: bool) -> Any:
            # Verified in the same pass (a failure keeps no backup and raises).
            self.calls.append(f"create ({reason})" + (", verified" if verify else ""))
            if verify and verify_fails:
                raise CheckFailed(f"the backup of {session.environment} failed: test restore")
            return manifest

        def prune_in(session: Any, *, keep: int) -> list[str]:
            self.calls.append(f"prune keeping {keep}")
            return ["b0"]

        for name, fake in [
            ("open_environment", open_environment),
            ("create_in", create_in),
            ("prune_in", prune_in),
        ]:
            monkeypatch.setattr(backup_step, name, fake)
        self.ctx: Any = SimpleNamespace(
            config=SimpleNamespace(backups=SimpleNamespace(retention=7))
        )


def test_a_backup_is_verified_before_retention_deletes_older_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parts = _Backups(monkeypatch)
    done = backup_step.run(parts.ctx, environment="production", reason="pre-deploy")
    assert parts.calls == [
        "create (pre-deploy), verified",
        "read the verification of b2",
        "prune keeping 7",
    ]
    assert done.pruned == ("b0",) and done.verification is not None


def test_a_backup_that_fails_verification_prunes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _Backups(monkeypatch, verify_fails=True)
    with pytest.raises(CheckFailed, match="test restore"):
        backup_step.run(parts.ctx, environment="production")
    assert parts.calls == ["create (manual), verified"]


def test_without_verification_nothing_is_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _Backups(monkeypatch)
    done = backup_step.run(parts.ctx, environment="production", verify=False)
    assert parts.calls == ["create (manual)"]
    assert done.verification is None and done.pruned == ()
