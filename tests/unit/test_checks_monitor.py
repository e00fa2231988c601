"""monitor's persistence rules, durations and metric rules; one run against the fake service."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploytools.checks import prometheus
from deploytools.checks.results import CheckResult, Verdict
from deploytools.config import MetricRule, parse_config
from deploytools.context import StepContext
from deploytools.errors import UsageError
from deploytools.steps import monitor
from tests.fakes.rbac_service import CONFIG, ENVIRON, FakeState, fake_service

P, F, INC = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE


def feed(verdicts: list[Verdict], in_a_row: int = 3, limit: int = 5) -> monitor.RuleTrack:
    track = monitor.RuleTrack("health")
    for i, verdict in enumerate(verdicts, start=1):
        track.add(CheckResult("health", verdict, "x", "y"), i, in_a_row=in_a_row, limit=limit)
    return track


def test_a_blip_is_not_a_breach() -> None:
    assert feed([P, F, P, P, F, P]).breached_at is None


def test_consecutive_failures_breach() -> None:
    assert feed([P, F, F, F, P]).breached_at == 4


def test_the_failure_limit_breaches_without_a_run() -> None:
    assert feed([F, P, F, P, F, P, F, P, F]).breached_at == 9


def test_inconclusive_samples_neither_fail_nor_recover() -> None:
    assert feed([F, INC, F, INC, F]).breached_at == 5
    assert feed([INC] * 10).breached_at is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("1h", 3600.0), ("500ms", 0.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert monitor.parse_duration(text) == seconds


def test_parse_duration_refuses_nonsense() -> None:
    with pytest.raises(UsageError, match="cannot read the duration"):
        monitor.parse_duration("soon")


def test_ratio_rule_judges_the_window_honestly() -> None:
    rule = MetricRule(
        name="error rate",
        metric="req_total",
        threshold="error_rate_percent",
        match={"status": "5.."},
    )
    before = prometheus.parse('req_total{status="200"} 0\nreq_total{status="500"} 0\n')
    after = prometheus.parse('req_total{status="200"} 50\nreq_total{status="500"} 50\n')
    result = monitor.evaluate_rule(rule, before, after, 0.1)
    assert result.verdict is F
    quiet = monitor.evaluate_rule(rule, after, after, 0.1)
    assert quiet.verdict is INC and quiet.measured == "no events in the window"
    clean = prometheus.parse('req_total{status="200"} 250\nreq_total{status="500"} 50\n')
    assert monitor.evaluate_rule(rule, after, clean, 0.1).verdict is INC  # 0 in 200: < 1.5 %


@pytest.fixture
def base_url() -> Iterator[str]:
    state = FakeState(users={"vera": ("viewer-password-123", ["viewer"])})
    with fake_service(state) as url:
        yield url


def test_monitor_run_samples_on_schedule_and_passes(base_url: str, tmp_path: Path) -> None:
    config = parse_config(CONFIG.replace("BASE_URL", base_url), tmp_path / "deploy.toml")
    probes = tuple(dataclasses.replace(p, suites=("monitor",)) for p in config.checks.probes[:1])
    settings = dataclasses.replace(config.checks.monitor, container_stats=False)
    config = dataclasses.replace(
        config, checks=dataclasses.replace(config.checks, probes=probes, monitor=settings)
    )
    now = [0.0]
    report = monitor.run(
        StepContext(config),
        environment="local",
        duration_s=3,
        interval_s=1,
        environ=ENVIRON,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    assert report.samples == 3
    assert report.verdict is P and report.breaches == ()
    assert [s.index for s in report.sample_log] == [1, 2, 3]
    health = next(r for r in report.results if r.name == "health")
    assert health.measured == "0 failed of 3 samples, longest run 0"


def test_rollback_on_breach_needs_a_rollback_step(tmp_path: Path) -> None:
    config = parse_config(CONFIG.replace("BASE_URL", "http://127.0.0.1:9"), tmp_path / "d.toml")
    with pytest.raises(UsageError, match="needs the rollback step"):
        monitor.run(
            StepContext(config),
            environment="local",
            duration_s=1,
            rollback_on_breach=True,
            rollback=None,
        )


def test_monitor_reads_the_credentials_its_probes_name_before_sampling(tmp_path: Path) -> None:
    config = parse_config(CONFIG.replace("BASE_URL", "http://127.0.0.1:9"), tmp_path / "d.toml")
    # "wrong password refused" names ${viewer.username} in its body.
    probes = tuple(dataclasses.replace(p, suites=("monitor",)) for p in config.checks.probes)
    config = dataclasses.replace(config, checks=dataclasses.replace(config.checks, probes=probes))
    slept: list[float] = []
    with pytest.raises(UsageError, match="T_VIEWER_USER"):
        monitor.run(
            StepContext(config), environment="local", duration_s=5, environ={}, sleep=slept.append
        )
    assert slept == []


def _breaching_config(tmp_path: Path) -> Any:
    """A watch of a service that never answers: every sample fails, the watch breaches."""
    config = parse_config(CONFIG.replace("BASE_URL", "http://127.0.0.1:9"), tmp_path / "d.toml")
    probes = tuple(dataclasses.replace(p, suites=("monitor",)) for p in config.checks.probes[:1])
    settings = dataclasses.replace(config.checks.monitor, container_stats=False)
    return dataclasses.replace(
        config, checks=dataclasses.replace(config.checks, probes=probes, monitor=settings)
    )


@pytest.mark.parametrize(
    "serving, rolls_back",
    [(["0007", "0007"], True), (["0007", "0006"], False)],
    ids=["still-serving", "rolled-back-meanwhile"],
)
def test_a_breach_rolls_back_only_the_release_the_watch_began_with(
    tmp_path: Path, serving: list[str], rolls_back: bool
) -> None:
    calls: list[str] = []
    answers = iter(serving)
    now = [0.0]
    report = monitor.run(
        StepContext(_breaching_config(tmp_path)),
        environment="local",
        duration_s=30,
        interval_s=1,
        environ=ENVIRON,
        rollback_on_breach=True,
        rollback=lambda ctx, env, reason: calls.append(reason) or "rolled back",
        serving=lambda: next(answers),
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    assert report.breaches
    assert report.rolled_back is rolls_back
    assert len(calls) == (1 if rolls_back else 0)
    if not rolls_back:
        assert report.rollback_result == (
            "not rolled back: release 0007 no longer serves (0006 does)"
        )
