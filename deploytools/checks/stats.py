"""Honest numbers: percentiles with distribution-free confidence ranges, and bounds on rates.

A percentile from n samples is reported with the order statistics that bracket the true
percentile with 95 % confidence (no assumption about the latency distribution). A rate of events
(errors, failed logins) gets the exact Clopper-Pearson range; zero events in n shows only that
the rate is below 3/n (the rule of three), which is a pass only if 3/n is under the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from deploytools.checks.results import Verdict

CONFIDENCE = 0.95


def _log_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(B <= k) for B ~ Binomial(n, p), summing the shorter tail."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if k <= n // 2:
        return min(1.0, sum(math.exp(_log_pmf(i, n, p)) for i in range(k + 1)))
    upper = sum(math.exp(_log_pmf(i, n, p)) for i in range(k + 1, n + 1))
    return max(0.0, 1.0 - upper)


@dataclass(frozen=True)
class Percentile:
    """The q-th percentile of n samples and its confidence range (None: not bounded by n)."""

    q: float
    n: int
    value: float | None
    low: float | None
    high: float | None

    def describe(self, unit: str = "ms") -> str:
        if self.value is None:
            return "no samples (n=0)"
        low = f"{self.low:.1f}" if self.low is not None else "?"
        high = f"{self.high:.1f}" if self.high is not None else "?"
        return f"p{self.q:g} {self.value:.1f} {unit} (95% CI {low}-{high}, n={self.n})"


def percentile(samples: Sequence[float], q: float, confidence: float = CONFIDENCE) -> Percentile:
    """Nearest-rank q-th percentile (0 < q < 100) with an order-statistic confidence interval.

    The number of samples below the true percentile is Binomial(n, q/100); the interval is
    [x_(l), x_(u)] with P(B < l) <= alpha/2 and P(B >= u) <= alpha/2. When n is too small for
    a bound to exist, that bound is None (and a verdict against it cannot be pass).
    """
    xs = sorted(samples)
    n = len(xs)
    p = q / 100.0
    if n == 0:
        return Percentile(q, 0, None, None, None)
    value = xs[max(0, math.ceil(p * n) - 1)]
    alpha = 1.0 - confidence
    cdf = [binom_cdf(k, n, p) for k in range(n + 1)]
    # Largest l (1-based) with P(B <= l-1) <= alpha/2.
    low_rank = 0
    for rank in range(1, n + 1):
        if cdf[rank - 1] <= alpha / 2:
            low_rank = rank
        else:
            break
    # Smallest u (1-based) with P(B >= u) = 1 - P(B <= u-1) <= alpha/2.
    high_rank = 0
    for rank in range(1, n + 1):
        if 1.0 - cdf[rank - 1] <= alpha / 2:
            high_rank = rank
            break
    low = xs[low_rank - 1] if low_rank >= 1 else None
    high = xs[high_rank - 1] if high_rank >= 1 else None
    return Percentile(q, n, value, low, high)


def percentile_verdict(p: Percentile, threshold: float, min_samples: int) -> tuple[Verdict, str]:
    """Pass only when the whole range is under the threshold; fail when all of it is over."""
    if p.n < min_samples:
        return Verdict.INCONCLUSIVE, f"only {p.n} samples, {min_samples} needed"
    if p.high is not None and p.high < threshold:
        return Verdict.PASS, ""
    if p.low is not None and p.low >= threshold:
        return Verdict.FAIL, f"p{p.q:g} is over {threshold:g} even at the low end of its range"
    if p.high is None:
        return Verdict.INCONCLUSIVE, f"{p.n} samples do not bound p{p.q:g} from above"
    return Verdict.INCONCLUSIVE, f"the range straddles {threshold:g}; more samples are needed"


@dataclass(frozen=True)
class Rate:
    """k events in n trials, with a 95 % range for the true rate (fractions, 0..1)."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else 0.0

    def describe(self, what: str = "errors") -> str:
        if self.n == 0:
            return f"no {what} data (n=0)"
        if self.k == 0:
            return f"0 {what} in {self.n}: rate below {100 * self.high:.3g}% (3/n)"
        if self.k == self.n:
            return f"{self.n} {what} in {self.n}: rate above {100 * self.low:.3g}% (1-3/n)"
        return (
            f"{self.k} {what} in {self.n} = {100 * self.value:.3g}% "
            f"(95% CI {100 * self.low:.3g}-{100 * self.high:.3g}%)"
        )

    def fraction(self) -> str:
        """k of n with what they show: "0 of 18: rate below 16.7% (3/n)"."""
        if self.n == 0:
            return "0 of 0"
        if self.k == 0:
            return f"0 of {self.n}: rate below {100 * self.high:.3g}% (3/n)"
        if self.k == self.n:
            return f"{self.n} of {self.n}: rate above {100 * self.low:.3g}% (1-3/n)"
        return (
            f"{self.k} of {self.n} = {100 * self.value:.3g}% "
            f"(95% CI {100 * self.low:.3g}-{100 * self.high:.3g}%)"
        )


def _solve(f: _Monotone, target: float) -> float:
    """Bisection for p in [0, 1] with f(p) = target, f decreasing in p."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class _Monotone:
    def __init__(self, k: int, n: int, upper_tail: bool) -> None:
        self.k, self.n, self.upper_tail = k, n, upper_tail

    def __call__(self, p: float) -> float:
        if self.upper_tail:  # P(B >= k), increasing in p: negate to make it decreasing
            return -(1.0 - binom_cdf(self.k - 1, self.n, p))
        return binom_cdf(self.k, self.n, p)  # P(B <= k), decreasing in p


def rate(k: int, n: int, confidence: float = CONFIDENCE) -> Rate:
    """k events in n: Clopper-Pearson range; 0 in n gives [0, 3/n], n in n gives [1-3/n, 1]."""
    if n <= 0:
        return Rate(0, 0, 0.0, 1.0)
    if k == 0:
        return Rate(0, n, 0.0, min(1.0, 3.0 / n))
    if k == n:
        return Rate(n, n, max(0.0, 1.0 - 3.0 / n), 1.0)
    alpha = 1.0 - confidence
    low = _solve(_Monotone(k, n, upper_tail=True), -alpha / 2)
    high = _solve(_Monotone(k, n, upper_tail=False), alpha / 2)
    return Rate(k, n, low, high)


def rate_verdict(r: Rate, threshold: float, *, below: bool = True) -> tuple[Verdict, str]:
    """Against a threshold (a fraction): `below` means the rate must stay under it."""
    if r.n == 0:
        return Verdict.INCONCLUSIVE, "no requests to judge"
    if below:
        if r.high <= threshold:
            return Verdict.PASS, ""
        if r.low > threshold:
            return Verdict.FAIL, f"over {100 * threshold:g}% even at the low end of its range"
        return Verdict.INCONCLUSIVE, f"{r.n} samples cannot show a rate under {100 * threshold:g}%"
    if r.low >= threshold:
        return Verdict.PASS, ""
    if r.high < threshold:
        return Verdict.FAIL, f"under {100 * threshold:g}% even at the high end of its range"
    return Verdict.INCONCLUSIVE, f"{r.n} samples cannot show a rate over {100 * threshold:g}%"
