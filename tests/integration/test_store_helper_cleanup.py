"""The backup store's helper container leaves nothing behind on the target engine."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from deploytools.engine import Engine
from deploytools.errors import ExternalCommandFailed
from deploytools.store.files import open_store

pytestmark = pytest.mark.integration


@pytest.fixture
def engine() -> Iterator[tuple[Any, str]]:
    """The engine's client and a store volume name of this test's own, removed afterwards."""
    client: Any = docker.from_env()
    store_volume = f"dtlead-store-{uuid.uuid4().hex[:8]}"
    try:
        yield client, store_volume
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            client.volumes.get(store_volume).remove()
        client.close()


def test_the_helper_and_its_anonymous_volume_are_removed(
    postgres_image: str, engine: tuple[Any, str]
) -> None:
    client, store_volume = engine
    with open_store(
        Engine(client), f"volume:{store_volume}", image=postgres_image, name_prefix="dtlead"
    ) as store:
        helper = client.containers.get(store.container.id)
        # The PostgreSQL image declares VOLUME /var/lib/postgresql/data: the engine gives the
        # helper an anonymous volume for it.
        anonymous = [m["Name"] for m in helper.attrs["Mounts"] if m.get("Name") != store_volume]
        assert anonymous, helper.attrs["Mounts"]
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(helper.id)
    for name in anonymous:
        with pytest.raises(docker.errors.NotFound):
            client.volumes.get(name)
    assert client.volumes.get(store_volume).name == store_volume  # the store itself stays


def test_read_all_reads_a_directory_in_one_exec_without_temporary_files(
    postgres_image: str, engine: tuple[Any, str]
) -> None:
    client, store_volume = engine
    with open_store(
        Engine(client), f"volume:{store_volume}", image=postgres_image, name_prefix="dtlead"
    ) as store:
        assert store.read_all("prod/releases", ".json") == {}  # no directory yet
        store.ensure_dir("prod/releases")
        assert store.read_all("prod/releases", ".json") == {}
        store.write("prod/releases/0001.json", b'{"id": "0001"}\n')
        store.write("prod/releases/0002.json", b"x" * 70_000)
        store.write("prod/releases/0002.checks-lock", b"{}")
        store.write("prod/releases/0003.json.tmp-1a2b", b"half")  # a write in progress
        store.write("prod/releases/-odd name.json", b"odd")
        assert store.read_all("prod/releases", ".json") == {
            "0001.json": b'{"id": "0001"}\n',
            "0002.json": b"x" * 70_000,
            "-odd name.json": b"odd",
        }
        everything = store.read_all("prod/releases")
        assert "0002.checks-lock" in everything
        assert "0003.json.tmp-1a2b" not in everything
        # The lock's release: removed only when it still holds the holder's token.
        store.write("prod/lock.json", b'{"token": "0123456789abcdef"}')
        assert not store.remove_if_contains("prod/lock.json", "fedcba9876543210")
        assert store.read("prod/lock.json") == b'{"token": "0123456789abcdef"}'
        assert store.remove_if_contains("prod/lock.json", "0123456789abcdef")
        assert not store.exists("prod/lock.json")
        assert not store.remove_if_contains("prod/lock.json", "0123456789abcdef")


def test_a_read_only_open_of_a_missing_volume_reads_empty_and_creates_nothing(
    postgres_image: str, engine: tuple[Any, str]
) -> None:
    client, store_volume = engine
    with open_store(
        Engine(client),
        f"volume:{store_volume}",
        image=postgres_image,
        name_prefix="dtlead",
        create=False,
    ) as store:
        assert "not created yet" in store.description
        assert store.read_all("prod/releases", ".json") == {}
        assert store.read("prod/lock.json") is None
        assert not store.exists("prod")
        with pytest.raises(ExternalCommandFailed, match="Read-only file system"):
            store.ensure_dir("prod")
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(store_volume)


def test_a_read_only_open_of_a_missing_directory_reads_empty_and_creates_nothing(
    postgres_image: str, engine: tuple[Any, str], tmp_path: Path
) -> None:
    client, _ = engine
    missing = tmp_path / "not-there" / "backups"
    with open_store(
        Engine(client), f"dir:{missing}", image=postgres_image, name_prefix="dtlead", create=False
    ) as store:
        assert "not created yet" in store.description
        assert store.read_all("prod/releases", ".json") == {}
        assert not store.exists("prod")
    assert not missing.exists()
    assert not missing.parent.exists()
    # Once the directory exists, the same read-only open reads what it holds.
    (missing / "prod").mkdir(parents=True)
    (missing / "prod" / "lock.json").write_bytes(b"{}")
    with open_store(
        Engine(client), f"dir:{missing}", image=postgres_image, name_prefix="dtlead", create=False
    ) as store:
        assert store.description == f"dir:{missing}"
        assert store.read("prod/lock.json") == b"{}"
