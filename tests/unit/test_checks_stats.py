"""Percentiles with order-statistic ranges, binomial rates, verdicts."""

from __future__ import annotations

import math
import random

import pytest

from deploytools.checks import stats
from deploytools.checks.results import Verdict


def test_binom_cdf_matches_direct_sum() -> None:
    n, p = 30, 0.2
    direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(8))
    assert stats.binom_cdf(7, n, p) == pytest.approx(direct)
    assert stats.binom_cdf(25, n, p) == pytest.approx(
        sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(26))
    )
    assert stats.binom_cdf(-1, n, p) == 0.0
    assert stats.binom_cdf(n, n, p) == 1.0


def test_percentile_is_nearest_rank_with_a_bracketing_range() -> None:
    samples = [float(i) for i in range(1, 201)]  # 1..200
    p = stats.percentile(samples, 95)
    assert p.n == 200
    assert p.value == 190.0
    assert p.low is not None and p.high is not None
    assert p.low < 190.0 < p.high
    # Ranks 184 and 197: P(184 <= B <= 196) >= 95 % for B ~ Binomial(200, 0.95), and neither
    # rank can move inward without losing that.
    assert (p.low, p.high) == (184.0, 197.0)
    cover = stats.binom_cdf(196, 200, 0.95) - stats.binom_cdf(183, 200, 0.95)
    assert cover >= 0.95
    assert stats.binom_cdf(195, 200, 0.95) - stats.binom_cdf(183, 200, 0.95) < 0.95
    assert stats.binom_cdf(196, 200, 0.95) - stats.binom_cdf(184, 200, 0.95) < 0.95


def test_too_few_samples_leave_the_upper_bound_open_and_the_verdict_inconclusive() -> None:
    p = stats.percentile([10.0] * 50, 95)
    assert p.high is None  # 50 samples cannot bound p95 from above at 95 %
    verdict, why = stats.percentile_verdict(p, 200.0, min_samples=20)
    assert verdict is Verdict.INCONCLUSIVE
    assert "do not bound" in why
    verdict, why = stats.percentile_verdict(stats.percentile([1.0] * 99, 95), 200.0, 100)
    assert verdict is Verdict.INCONCLUSIVE and "only 99 samples" in why


def test_percentile_verdicts_pass_fail_and_straddle() -> None:
    rng = random.Random(7)
    fast = [rng.uniform(5, 50) for _ in range(300)]
    slow = [rng.uniform(300, 400) for _ in range(300)]
    around = [rng.uniform(150, 250) for _ in range(300)]
    assert stats.percentile_verdict(stats.percentile(fast, 95), 200, 100)[0] is Verdict.PASS
    assert stats.percentile_verdict(stats.percentile(slow, 95), 200, 100)[0] is Verdict.FAIL
    verdict, _ = stats.percentile_verdict(stats.percentile(around, 95), 245, 100)
    assert verdict is Verdict.INCONCLUSIVE


def test_zero_events_show_only_a_rate_below_three_over_n() -> None:
    r = stats.rate(0, 200)
    assert r.high == pytest.approx(0.015)
    assert r.describe() == "0 errors in 200: rate below 1.5% (3/n)"
    assert stats.rate_verdict(r, 0.001)[0] is Verdict.INCONCLUSIVE  # 1.5 % cannot show 0.1 %
    assert stats.rate_verdict(stats.rate(0, 3000), 0.001)[0] is Verdict.PASS


def test_clopper_pearson_range_for_some_events() -> None:
    r = stats.rate(3, 1000)
    assert r.low == pytest.approx(0.000619, rel=0.01)
    assert r.high == pytest.approx(0.00874, rel=0.01)
    assert stats.rate_verdict(stats.rate(50, 100), 0.001)[0] is Verdict.FAIL


def test_success_rates_are_judged_from_below() -> None:
    good = stats.rate(1000, 1000)
    assert good.low == pytest.approx(0.997)
    assert stats.rate_verdict(good, 0.99, below=False)[0] is Verdict.PASS
    bad = stats.rate(50, 100)
    assert stats.rate_verdict(bad, 0.99, below=False)[0] is Verdict.FAIL
    assert stats.rate_verdict(stats.rate(20, 20), 0.99, below=False)[0] is Verdict.INCONCLUSIVE
    assert stats.rate_verdict(stats.rate(0, 0), 0.99, below=False)[0] is Verdict.INCONCLUSIVE


def test_fraction_says_what_k_of_n_shows() -> None:
    assert stats.rate(0, 18).fraction() == "0 of 18: rate below 16.7% (3/n)"
    assert stats.rate(2, 2).fraction() == "2 of 2: rate above 0% (1-3/n)"
    assert stats.rate(3, 1000).fraction().startswith("3 of 1000 = 0.3% (95% CI 0.0619-0.87")
