"""The unit tier never reaches a Docker engine.

Every unit test runs with DOCKER_HOST naming a socket that does not exist, so a test that opens
an engine by accident (a step's store, a container lookup) fails with EnvironmentUnreachable
instead of quietly using the machine's engine, leaving containers behind or depending on what
runs there. A test that needs the engine belongs to the integration tier.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_docker_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    nowhere = tmp_path_factory.getbasetemp() / "no-docker-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{nowhere}")
