"""gunicorn entry point: `gunicorn -c gunicorn.conf.py rbac_api.wsgi:app`."""

from .app import create_app
from .logs import configure_logging

configure_logging()
app = create_app()
