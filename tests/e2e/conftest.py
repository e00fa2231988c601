"""Fixtures of the end-to-end tests: the integration tests' session fixtures (the release
repository, the 1.15.1 image, the PostgreSQL image), loaded from tests/integration/conftest.py
under another module name (two modules called `conftest` would shadow each other)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "integration" / "conftest.py"
_SPEC = importlib.util.spec_from_file_location("dte2e_integration_fixtures", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
shared = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = shared
_SPEC.loader.exec_module(shared)

docker_client = shared.docker_client
postgres_image = shared.postgres_image
release_repo = shared.release_repo
release_images = shared.release_images
