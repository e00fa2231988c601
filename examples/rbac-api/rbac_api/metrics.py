"""Prometheus metrics.

The service runs one gunicorn worker with threads (see gunicorn.conf.py), so the default
in-process registry is complete; several worker processes would need PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
FAST_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

HTTP_REQUESTS = Counter(
    "rbac_http_requests_total",
    "HTTP requests handled, by route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "rbac_http_request_duration_seconds",
    "Time to handle an HTTP request, by route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
LOGINS = Counter("rbac_logins_total", "Login attempts, by outcome.", ["outcome"])
PERMISSION_CHECK_LATENCY = Histogram(
    "rbac_permission_check_duration_seconds",
    "Time to decide a permission check.",
    ["permission", "result"],
    buckets=FAST_BUCKETS,
)
DB_QUERY_LATENCY = Histogram(
    "rbac_db_query_duration_seconds",
    "Time of each SQL statement sent to PostgreSQL.",
    buckets=LATENCY_BUCKETS,
)
APP_INFO = Gauge("rbac_app_info", "The running release (always 1).", ["version"])

for _outcome in ("success", "invalid_credentials", "bad_request"):
    LOGINS.labels(outcome=_outcome)
