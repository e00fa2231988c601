"""gunicorn settings for rbac-api.

One worker with threads: the Prometheus client's default registry then sees every request.
Several worker processes would each hold their own counters and /metrics would answer from
whichever worker took the scrape, unless PROMETHEUS_MULTIPROC_DIR mode were set up.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
worker_class = "gthread"
workers = 1
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 30
# SIGTERM: stop accepting, let in-flight requests finish, exit within a few seconds.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "5"))
keepalive = 5
accesslog = None  # the app logs one JSON line per request itself
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "rbac_api.logs.JsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        }
    },
    "root": {"level": loglevel.upper(), "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"level": "WARNING", "handlers": ["stdout"], "propagate": False},
    },
}
