"""The Prometheus text parser and the window computations monitor uses."""

from __future__ import annotations

import math

import pytest

from deploytools.checks import prometheus

BEFORE = """\
# HELP rbac_http_requests_total HTTP requests.
# TYPE rbac_http_requests_total counter
rbac_http_requests_total{method="GET",route="/documents",status="200"} 100.0
rbac_http_requests_total{method="GET",route="/documents",status="500"} 1.0
rbac_logins_total{outcome="success"} 10.0
rbac_logins_total{outcome="invalid_credentials"} 0.0
rbac_logins_total{outcome="bad_request"} 5.0
lat_seconds_bucket{le="0.1"} 10.0
lat_seconds_bucket{le="0.2"} 10.0
lat_seconds_bucket{le="+Inf"} 10.0
lat_seconds_count 10.0
"""

AFTER = """\
rbac_http_requests_total{method="GET",route="/documents",status="200"} 196.0
rbac_http_requests_total{method="GET",route="/documents",status="500"} 5.0
rbac_logins_total{outcome="success"} 19.0
rbac_logins_total{outcome="invalid_credentials"} 1.0
rbac_logins_total{outcome="bad_request"} 50.0
lat_seconds_bucket{le="0.1"} 60.0
lat_seconds_bucket{le="0.2"} 110.0
lat_seconds_bucket{le="+Inf"} 110.0
lat_seconds_count 110.0
"""


def test_parse_reads_names_labels_values_and_skips_comments() -> None:
    samples = prometheus.parse(BEFORE)
    assert len(samples) == 9
    first = samples[0]
    assert first.name == "rbac_http_requests_total"
    assert first.label("status") == "200" and first.value == 100.0
    inf = next(s for s in samples if s.label("le") == "+Inf")
    assert inf.value == 10.0
    escaped = prometheus.parse('m{path="a\\"b",x="1"} +Inf 1700000000\n')[0]
    assert escaped.label("path") == 'a"b' and math.isinf(escaped.value)


def test_parse_names_the_bad_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        prometheus.parse("ok 1\nthis is not a sample\n")


def test_counter_ratio_over_the_window() -> None:
    before, after = prometheus.parse(BEFORE), prometheus.parse(AFTER)
    assert prometheus.counter_ratio(
        before, after, "rbac_http_requests_total", {"status": "5.."}, {}
    ) == (4, 100)
    logins = prometheus.counter_ratio(
        before,
        after,
        "rbac_logins_total",
        {"outcome": "success"},
        {"outcome": "success|invalid_credentials"},
    )
    assert logins == (9, 10)


def test_a_counter_reset_counts_from_zero() -> None:
    before = prometheus.parse('c{a="x"} 500\n')
    after = prometheus.parse('c{a="x"} 7\n')
    assert prometheus.counter_ratio(before, after, "c", {}, {}) == (7, 7)


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    before, after = prometheus.parse(BEFORE), prometheus.parse(AFTER)
    q = prometheus.histogram_quantile(before, after, "lat_seconds", 0.5)
    # 100 new observations: 50 in (0, 0.1], 50 in (0.1, 0.2]; the median is at 0.1.
    assert q.count == 100
    assert q.value == pytest.approx(0.1)
    q95 = prometheus.histogram_quantile(before, after, "lat_seconds", 0.95)
    assert q95.value == pytest.approx(0.19)
    empty = prometheus.histogram_quantile(after, after, "lat_seconds", 0.95)
    assert empty.value is None and empty.count == 0
