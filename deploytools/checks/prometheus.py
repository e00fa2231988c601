"""The Prometheus text exposition format, and what `monitor` computes from two scrapes.

A small parser (samples only: name, labels, value; comments and timestamps are skipped) is
enough for counters and histograms, so no client library is needed. Counters and histogram
buckets are cumulative since the process started: a window's numbers are the difference of two
scrapes, and a counter that went down means the process restarted (then the later scrape alone
is the window).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?\s*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def label(self, key: str) -> str:
        return dict(self.labels).get(key, "")


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def _parse_value(text: str) -> float:
    lowered = text.lower()
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    return float(text)


def parse(text: str) -> list[Sample]:
    """Every sample in a /metrics answer. Raises ValueError naming the first bad line."""
    samples = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if not match:
            raise ValueError(f"line {number} is not a Prometheus sample: {line[:80]}")
        name, _, label_text, value = match.group(1), match.group(2), match.group(3), match.group(4)
        labels: list[tuple[str, str]] = []
        if label_text:
            position = 0
            while position < len(label_text):
                lm = _LABEL_RE.match(label_text, position)
                if not lm:
                    raise ValueError(f"line {number}: bad labels: {label_text[:80]}")
                labels.append((lm.group(1), _unescape(lm.group(2))))
                position = lm.end()
        try:
            parsed = _parse_value(value)
        except ValueError:
            raise ValueError(f"line {number}: bad value {value!r}") from None
        samples.append(Sample(name, tuple(sorted(labels)), parsed))
    return samples


#: The process metric every official Prometheus client library exports (Go, Python, Java,
#: Node): when the process started, in Unix seconds.
START_TIME = "process_start_time_seconds"
#: The label `tagged` adds: which replica a series was scraped from.
REPLICA_LABEL = "deploytools_replica"


def replica_of(samples: list[Sample]) -> str:
    """Which process answered a scrape, as far as its metrics tell: its start time
    (`process_start_time_seconds`); "" when the service does not export it. Behind a load
    balancer each scrape reaches one replica, and only two scrapes of the same one make a
    window (another's counters are not a continuation)."""
    for sample in samples:
        if sample.name == START_TIME and not sample.labels:
            return repr(sample.value)
    return ""


def tagged(samples: list[Sample], replica: str) -> list[Sample]:
    """The scrape's samples, each series labelled with `replica`: the scrapes of several
    replicas, put together, are then distinct series that a window adds up."""
    return [
        Sample(s.name, tuple(sorted((*s.labels, (REPLICA_LABEL, replica)))), s.value)
        for s in samples
    ]


def _matches(sample: Sample, patterns: Mapping[str, str]) -> bool:
    return all(re.fullmatch(p, sample.label(k)) for k, p in patterns.items())


def _window(before: list[Sample] | None, after: list[Sample], name: str) -> dict[Labels, float]:
    """Per series of `name`: its increase between the scrapes (a reset restarts from zero)."""
    earlier = {(s.name, s.labels): s.value for s in before or []}
    out: dict[Labels, float] = {}
    for s in after:
        if s.name != name:
            continue
        previous = earlier.get((s.name, s.labels), 0.0)
        out[s.labels] = s.value - previous if s.value >= previous else s.value
    return out


def counter_ratio(
    before: list[Sample] | None,
    after: list[Sample],
    metric: str,
    match: Mapping[str, str],
    among: Mapping[str, str],
) -> tuple[int, int]:
    """(events, trials) in the window: the increase of `metric` series matching `match`, and of
    the series matching `among` (all series when `among` is empty)."""
    increases = _window(before, after, metric)
    k = n = 0.0
    for labels, inc in increases.items():
        s = Sample(metric, labels, inc)
        if _matches(s, among):
            n += inc
            if _matches(s, match):
                k += inc
    return round(k), round(n)


@dataclass(frozen=True)
class HistogramQuantile:
    value: float | None
    count: int
    #: The window's cumulative bucket counts, (upper bound, observations <= it), ascending.
    buckets: tuple[tuple[float, int], ...] = ()


def histogram_quantile(
    before: list[Sample] | None,
    after: list[Sample],
    metric: str,
    q: float,
    match: Mapping[str, str] | None = None,
) -> HistogramQuantile:
    """The q-quantile of a histogram's observations in the window, interpolated linearly within
    the bucket that holds it, as PromQL's histogram_quantile() does (series summed)."""
    buckets: dict[float, float] = {}
    for labels, inc in _window(before, after, f"{metric}_bucket").items():
        s = Sample(metric, labels, inc)
        if match and not _matches(s, match):
            continue
        le = _parse_value(s.label("le"))
        buckets[le] = buckets.get(le, 0.0) + inc
    if not buckets:
        return HistogramQuantile(None, 0)
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return HistogramQuantile(None, 0)
    cumulative = tuple((b, round(buckets[b])) for b in bounds)
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                # Past the last finite bucket: the quantile is only known to exceed it.
                return HistogramQuantile(lower_bound, round(total), cumulative)
            width = count - lower_count
            fraction = (rank - lower_count) / width if width > 0 else 1.0
            value = lower_bound + (bound - lower_bound) * fraction
            return HistogramQuantile(value, round(total), cumulative)
        lower_bound, lower_count = bound, count
    return HistogramQuantile(bounds[-1], round(total), cumulative)
