"""The backup store's helper container leaves nothing behind on the target engine."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import docker
import docker.errors
import pytest

from deploytools.backup_store import open_store

pytestmark = pytest.mark.integration


def test_the_helper_and_its_anonymous_volume_are_removed(postgres_image: str) -> None:
    client: Any = docker.from_env()
    store_volume = f"dtlead-store-{uuid.uuid4().hex[:8]}"
    try:
        with open_store(
            client, f"volume:{store_volume}", image=postgres_image, name_prefix="dtlead"
        ) as store:
            helper = client.containers.get(store.container.id)
            # The PostgreSQL image declares VOLUME /var/lib/postgresql/data: the engine gives
            # the helper an anonymous volume for it.
            anonymous = [m["Name"] for m in helper.attrs["Mounts"] if m.get("Name") != store_volume]
            assert anonymous, helper.attrs["Mounts"]
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(helper.id)
        for name in anonymous:
            with pytest.raises(docker.errors.NotFound):
                client.volumes.get(name)
        assert client.volumes.get(store_volume).name == store_volume  # the store itself stays
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            client.volumes.get(store_volume).remove()
        client.close()
