"""The store's kept helper on the real engine (store/helper.py): reused by the next command, held
while a command runs, gone by itself once idle (with its anonymous volume), a lease refused by a
helper on its way out, two commands at once, and a helper killed between two commands."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest

from deploytools.engine import Engine, Mount
from deploytools.store import helper
from deploytools.store.files import open_store
from tests.helpers.stacks import wait_until

pytestmark = pytest.mark.integration

PREFIX = "dtfr"


@pytest.fixture
def engine() -> Iterator[tuple[Any, str]]:
    """The engine's client and a store volume of this test's own; every kept helper of it and
    the volume are removed afterwards."""
    client: Any = docker.from_env()
    volume = f"{PREFIX}-store-{uuid.uuid4().hex[:8]}"
    try:
        yield client, volume
    finally:
        label = f"{helper.STORE_LABEL}=volume:{volume}"
        for container in client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True, v=True)
        with contextlib.suppress(docker.errors.DockerException):
            client.volumes.get(volume).remove()
        client.close()


def running_helpers(client: Any, volume: str) -> list[str]:
    label = f"{helper.STORE_LABEL}=volume:{volume}"
    return [c.id for c in client.containers.list(filters={"label": label})]


def test_the_next_command_reuses_the_helper_the_first_one_started(
    postgres_image: str, engine: tuple[Any, str]
) -> None:
    client, volume = engine
    store = f"volume:{volume}"
    with open_store(
        Engine(client), store, image=postgres_image, name_prefix=PREFIX, keep_s=600
    ) as first:
        first.ensure_dir("prod/releases")
        first.write("prod/releases/0001.json", b"{}")
    assert running_helpers(client, volume) == [first.container.id]  # left running
    with open_store(
        Engine(client), store, image=postgres_image, name_prefix=PREFIX, keep_s=600
    ) as second:
        assert second.container.id == first.container.id
        assert second.read("prod/releases/0001.json") == b"{}"
    # A command's own helper (keep_s 0) does not take it, and is gone after its command.
    with open_store(Engine(client), store, image=postgres_image, name_prefix=PREFIX) as own:
        assert own.container.id != first.container.id
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(own.container.id)


def test_a_kept_helper_stays_while_held_and_goes_away_once_idle(
    postgres_image: str, engine: tuple[Any, str]
) -> None:
    client, volume = engine
    spec = helper.kept_spec(
        f"volume:{volume}",
        postgres_image,
        name_prefix=PREFIX,
        mounts=[Mount("/store", volume)],
        idle_s=2,
        poll_s=1,
    )
    lease = helper.start_kept(Engine(client), spec)
    container = client.containers.get(lease.container.id)
    # The PostgreSQL image declares a VOLUME: the helper has an anonymous volume for it.
    anonymous = [m["Name"] for m in container.attrs["Mounts"] if m.get("Name") != volume]
    assert anonymous
    time.sleep(4)  # twice its idle time, held all along
    container.reload()
    assert container.status == "running"
    lease.release()
    wait_until(
        lambda: not running_helpers(client, volume), timeout=30, what="the helper exits idle"
    )
    wait_until(
        lambda: not client.containers.list(all=True, filters={"id": container.id}),
        timeout=30,
        what="the engine removes it",
    )
    for name in anonymous:
        wait_until(
            lambda name=name: name not in {v.name for v in client.volumes.list()},
            timeout=30,
            what=f"its anonymous volume {name} is removed",
        )
    assert client.volumes.get(volume).name == volume  # the store stays


def test_a_helper_on_its_way_out_refuses_a_lease_and_the_command_starts_its_own(
    postgres_image: str, engine: tuple[Any, str]
) -> None:
    client, volume = engine
    store = f"volume:{volume}"
    with open_store(
        Engine(client), store, image=postgres_image, name_prefix=PREFIX, keep_s=600
    ) as first:
        # What the helper's main process leaves before its last look.
        first.run(["sh", "-c", f": > {helper.EXITING_MARK}"])
    assert helper.take_lease(Engine(client).container(first.container.id)) is None
    with open_store(
        Engine(client), store, image=postgres_image, name_prefix=PREFIX, keep_s=600
    ) as second:
        assert second.container.id != first.container.id
        assert second.read("nothing") is None


def test_two_commands_at_once_both_reach_the_store(
    postgres_image: str, engine: tuple[Any, str]
) -> None:
    client, volume = engine
    store = f"volume:{volume}"
    with open_store(
        Engine(client), store, image=postgres_image, name_prefix=PREFIX, keep_s=600
    ) as first:
        first.ensure_dir("prod")
    barrier = threading.Barrier(2)
    used: list[str] = []
    errors: list[BaseException] = []

    def command(n: int) -> None:
        try:
            with open_store(
                Engine(docker.from_env()),
                store,
                image=postgres_image,
                name_prefix=PREFIX,
                keep_s=600,
            ) as opened:
                barrier.wait(timeout=60)  # both hold it at once
                opened.write(f"prod/{n}.json", b"%d" % n)
                used.append(opened.container.id)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=command, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert used == [first.container.id] * 2  # one helper, two leases
    with open_store(
        Engine(client), store, image=postgres_image, name_prefix=PREFIX, keep_s=600
    ) as after:
        assert after.read("prod/1.json") == b"1" and after.read("prod/2.json") == b"2"


def test_a_helper_killed_between_two_commands_is_replaced(
    postgres_image: str, engine: tuple[Any, str]
) -> None:
    client, volume = engine
    store = f"volume:{volume}"
    with open_store(
        Engine(client), store, image=postgres_image, name_prefix=PREFIX, keep_s=600
    ) as first:
        first.ensure_dir("prod")
        first.write("prod/lock.json", b"{}")
    client.containers.get(first.container.id).kill()
    with open_store(
        Engine(client), store, image=postgres_image, name_prefix=PREFIX, keep_s=600
    ) as second:
        assert second.container.id != first.container.id
        assert second.read("prod/lock.json") == b"{}"


def test_the_lock_and_the_records_are_taken_and_read_in_one_exec(
    postgres_image: str, engine: tuple[Any, str]
) -> None:
    client, volume = engine
    with open_store(
        Engine(client), f"volume:{volume}", image=postgres_image, name_prefix=PREFIX, keep_s=600
    ) as store:
        # A fresh store: the directories come with the lock's script, nothing to read yet.
        store.ensure_dir("prod/releases", "prod/backups", with_next=True)
        assert (
            store.create_exclusive_then_read_all(
                "prod/lock.json", b'{"a": 1}', "prod/releases", ".json"
            )
            == {}
        )
        assert store.file_mode("prod/releases") == "700"
        store.write("prod/releases/0001.json", b"{}")
        store.write("prod/releases/0002.json.tmp-1a2b", b"half")
        # Held: nothing is read, the lock is left as it was.
        assert (
            store.create_exclusive_then_read_all(
                "prod/lock.json", b'{"a": 2}', "prod/releases", ".json"
            )
            is None
        )
        assert store.read("prod/lock.json") == b'{"a": 1}'
        store.remove("prod/lock.json")
        assert store.create_exclusive_then_read_all(
            "prod/lock.json", b'{"a": 3}', "prod/releases", ".json"
        ) == {"0001.json": b"{}"}
        assert store.read("prod/lock.json") == b'{"a": 3}'
        assert store.list_files("prod") == ["backups", "lock.json", "releases"]
