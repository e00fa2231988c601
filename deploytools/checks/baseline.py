"""A release's baseline: its first watch's whole-watch numbers, and the comparison of a later
watch with them (the runbook's 24-hour watch, as scheduled short runs).

Only differences the numbers can show count as regressions. A rate regresses when its 95 %
range lies wholly on the wrong side of the baseline's range. A quantile q regresses when the
share of this watch's observations above `tolerance` times the baseline's q-quantile is, at
95 % confidence, more than 1 - q (a distribution-free test on the histogram's buckets: under no
regression at most 1 - q of them lie above the baseline's quantile, let alone above a multiple of
it). Comparing two quantile estimates directly would call the noise of a few slow requests a
regression. Too few observations on either side is inconclusive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deploytools.checks import stats
from deploytools.checks.results import CheckResult, Verdict
from deploytools.config import MetricRule


@dataclass(frozen=True)
class Baseline:
    """What one release's first watch measured, per metric rule."""

    release: str
    version: str | None
    image: str
    recorded: str
    duration_s: float
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)


def measurement(rule: MetricRule, result: CheckResult) -> dict[str, Any] | None:
    """The numbers of an over-the-watch result worth keeping (None: nothing was measured)."""
    data = result.data or {}
    if rule.kind == "ratio" and "k" in data and "n" in data:
        return {"kind": "ratio", "k": int(data["k"]), "n": int(data["n"])}
    if rule.kind == "quantile" and "value" in data and "count" in data:
        return {
            "kind": "quantile",
            "value": float(data["value"]),
            "count": int(data["count"]),
            "buckets": list(data.get("buckets") or []),
        }
    return None


def compare(
    rule: MetricRule,
    now: Mapping[str, Any] | None,
    then: Mapping[str, Any] | None,
    *,
    tolerance: float,
    release: str,
) -> CheckResult:
    """One rule of this watch against the release's baseline."""
    name = f"baseline: {rule.name}"
    if now is None or then is None:
        missing = "this watch" if now is None else f"the baseline of release {release}"
        return CheckResult(
            name,
            Verdict.INCONCLUSIVE,
            "not measured",
            "no regression",
            f"{missing} has no numbers for it",
        )
    if rule.kind == "ratio":
        current, base = stats.rate(now["k"], now["n"]), stats.rate(then["k"], then["n"])
        measured = f"now {current.fraction()}; baseline {base.fraction()}"
        if current.n == 0 or base.n == 0:
            return CheckResult(
                name, Verdict.INCONCLUSIVE, measured, "no regression", "no events on one side"
            )
        worse = current.low > base.high if rule.below else current.high < base.low
        return CheckResult(
            name,
            Verdict.FAIL if worse else Verdict.PASS,
            measured,
            "95% ranges not wholly worse than the baseline's",
            "worse than the baseline beyond the ranges' overlap" if worse else "",
        )
    unit = " ms" if rule.threshold.endswith("_ms") else ""
    measured = (
        f"now ~{now['value']:.3g}{unit} (n={now['count']}); "
        f"baseline ~{then['value']:.3g}{unit} (n={then['count']})"
    )
    want = f"not shown over {tolerance:g}x the baseline"
    if now["count"] < rule.min_count or then["count"] < rule.min_count:
        return CheckResult(
            name,
            Verdict.INCONCLUSIVE,
            measured,
            want,
            f"{rule.min_count} observations needed on both sides",
        )
    if not rule.below:
        return CheckResult(
            name,
            Verdict.INCONCLUSIVE,
            measured,
            want,
            "only upper limits are compared with a baseline",
        )
    bound = then["value"] * tolerance
    above = _count_above(now.get("buckets") or [], bound, int(now["count"]))
    if above is None:
        return CheckResult(
            name,
            Verdict.INCONCLUSIVE,
            measured,
            want,
            f"no bucket bound at or over {bound:.3g}{unit} to count against",
        )
    share = stats.rate(above, int(now["count"]))
    limit = 1.0 - rule.quantile
    worse = share.low > limit
    detail = (
        f"{share.fraction()} observations over {bound:.3g}{unit}: more than "
        f"{100 * limit:g}% even at the low end of the range"
        if worse
        else ""
    )
    return CheckResult(
        name,
        Verdict.FAIL if worse else Verdict.PASS,
        measured,
        want,
        detail,
        {"above": above, "bound": bound},
    )


def _count_above(buckets: list[list[Any]], bound: float, total: int) -> int | None:
    """Observations above the smallest finite bucket bound >= `bound`."""
    for le, cumulative in buckets:
        if le != "+Inf" and float(le) >= bound:
            return total - int(cumulative)
    return None
