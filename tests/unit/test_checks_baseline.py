"""Comparing a watch with the release's baseline: only differences the numbers can show."""

from __future__ import annotations

from deploytools.checks import baseline
from deploytools.checks.results import CheckResult, Verdict
from deploytools.config import MetricRule

ERRORS = MetricRule(name="error rate", metric="m", threshold="error_rate_percent")
LOGINS = MetricRule(name="auth", metric="m", threshold="auth_success_percent", below=False)
P95 = MetricRule(name="p95", metric="h", threshold="api_p95_ms", kind="quantile", scale=1000)


def ratio(k: int, n: int) -> dict[str, int | str]:
    return {"kind": "ratio", "k": k, "n": n}


def quantile(value: float, count: int, above_10: int = 0) -> dict[str, object]:
    """A window of `count` observations, `above_10` of them over 10 ms (buckets in ms)."""
    below = count - above_10
    buckets = [[5.0, below], [10.0, below], [25.0, count], ["+Inf", count]]
    return {"kind": "quantile", "value": value, "count": count, "buckets": buckets}


def test_a_rate_is_worse_only_when_the_ranges_do_not_overlap() -> None:
    same = baseline.compare(ERRORS, ratio(2, 1000), ratio(1, 1000), tolerance=2, release="0002")
    assert same.verdict is Verdict.PASS
    worse = baseline.compare(ERRORS, ratio(80, 1000), ratio(1, 1000), tolerance=2, release="0002")
    assert worse.verdict is Verdict.FAIL
    assert worse.name == "baseline: error rate"
    assert worse.measured.startswith("now 80 of 1000 = 8%")


def test_a_success_rate_is_worse_when_it_falls() -> None:
    fell = baseline.compare(LOGINS, ratio(500, 1000), ratio(995, 1000), tolerance=2, release="1")
    assert fell.verdict is Verdict.FAIL
    rose = baseline.compare(LOGINS, ratio(1000, 1000), ratio(900, 1000), tolerance=2, release="1")
    assert rose.verdict is Verdict.PASS


def test_a_quantile_regresses_only_when_many_observations_are_past_the_tolerance() -> None:
    base = quantile(4.0, 500)  # p95 4 ms; tolerance 2 -> count what is over 8 ms (bucket 10)
    noisy = baseline.compare(P95, quantile(22.0, 35, above_10=2), base, tolerance=2, release="1")
    assert noisy.verdict is Verdict.PASS  # 2 of 35 slow: the p95 estimate jumps, the share not
    slow = baseline.compare(P95, quantile(22.0, 200, above_10=60), base, tolerance=2, release="1")
    assert slow.verdict is Verdict.FAIL
    assert slow.detail.startswith("60 of 200 = 30%")
    few = baseline.compare(P95, quantile(90.0, 5), base, tolerance=2, release="1")
    assert few.verdict is Verdict.INCONCLUSIVE


def test_missing_numbers_are_inconclusive() -> None:
    result = baseline.compare(P95, None, quantile(20.0, 500), tolerance=2, release="0003")
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.detail == "this watch has no numbers for it"


def test_measurement_keeps_the_numbers_of_a_whole_watch_result() -> None:
    result = CheckResult("error rate", Verdict.PASS, "x", "y", data={"k": 0, "n": 3000})
    assert baseline.measurement(ERRORS, result) == {"kind": "ratio", "k": 0, "n": 3000}
    assert baseline.measurement(P95, result) is None
