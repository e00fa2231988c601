"""The watch window after a rolling deploy, on the real engine behind the stack's HAProxy proxy:
the previous release's container stays up, drained; a rollback in the window (by hand, or by
monitor's breach) switches the proxy back to that very container with no failed request; a new
deploy replaces it; after the window `monitor` removes it; a rollback after the window takes the
cold path. On the shared dtdep stack (tests/helpers/shared_stack.py); image tags dtwatch-."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from deploytools import proxy
from tests.helpers.load import OpenLoad, failures
from tests.helpers.shared_stack import (
    DtdepEnv,
    ImageVariants,
    app_containers,
    module_env,
    records,
    write_config,
)
from tests.helpers.stacks import proxy_servers

if TYPE_CHECKING:
    from tests.helpers.stacks import ReleaseImages

pytestmark = pytest.mark.integration

EXPAND_ONLY = 'LABEL deploytools.migrations.expand-only="true"\n'
RATE = 20.0  # light load through the proxy; benchmarks/rollback_bench.py measures at 100

env = module_env("watch", health_timeout_s=30)


@pytest.fixture(scope="module")
def v2(image_variants: ImageVariants, release_images: ReleaseImages) -> str:
    """1.15.2 (its migration adds a table) labelled expand-only, as the lint would."""
    return image_variants.build(
        release_images["1.15.2"], "rbac-api-test:dtwatch-1.15.2", dockerfile=EXPAND_ONLY, files={}
    )


@pytest.fixture(scope="module")
def v2b(image_variants: ImageVariants, v2: str) -> str:
    """Another build of 1.15.2 (another image id): a second release in a row."""
    return image_variants.build(
        v2, "rbac-api-test:dtwatch-1.15.2b", dockerfile="LABEL dtwatch=b\n", files={}
    )


def ids(env: DtdepEnv) -> set[str]:
    return {c.id for c in app_containers(env)}


def serving_servers(env: DtdepEnv) -> list[str]:
    """The proxy's servers that take traffic (runtime API)."""
    return [name for name, server in proxy_servers(env.stack).items() if server.serving]


def deploy(env: DtdepEnv, image: str, config: Path | None = None) -> dict[str, Any]:
    result = env.cli(
        "deploy", "--env", "prod", "--image", image, "--strategy", "rolling", config=config
    )
    assert result.exit_code == 0, result.output
    record: dict[str, Any] = json.loads(result.stdout)["result"]["record"]
    return record


def short_window(env: DtdepEnv, path: Path, seconds: float, extra: str = "") -> Path:
    config = write_config(
        path,
        {env.environment: env.stack},
        store=f"volume:{env.store_volume}",
        health_timeout_s=30,
        watch_window_s=seconds,
        extra=extra,
    )
    return config.path


def test_a_rollback_in_the_window_switches_back_to_the_kept_container(
    env: DtdepEnv, v2: str
) -> None:
    (old,) = app_containers(env)
    record = deploy(env, v2)
    assert record["kept_container"] == old.id
    assert record["kept_until"] and record["kept_container_name"] == old.name
    assert old.id in ids(env) and len(ids(env)) == 2
    old.reload()
    assert old.status == "running"
    assert env.stack.health()["version"] == "1.15.2"  # the kept one takes no traffic
    assert proxy.SERVICE_SERVER not in serving_servers(env)

    status = env.cli("status", "--env", "prod")
    kept = json.loads(status.stdout)["result"]["kept"]
    assert kept["container"] == old.name and kept["state"] == "running"
    assert kept["until"] == record["kept_until"] and kept["memory_mb"] > 0

    with OpenLoad(env.stack.app_port, rate_per_s=RATE) as load:
        result = env.cli("rollback", "--env", "prod", "--yes")
    samples = load.stop()
    assert result.exit_code == 0, result.output
    assert len(samples) > 0
    assert failures(samples) == []
    rollback = json.loads(result.stdout)["result"]
    assert rollback["watch_window_rollback"] is True
    assert any("watch-window rollback" in note for note in rollback["notes"])
    assert {"switch", "drain"} <= set(rollback["timings"])
    assert "start" not in rollback["timings"]  # nothing was started: a switch
    assert ids(env) == {old.id}  # the very container that served before serves again
    assert env.stack.health()["version"] == "1.15.1"
    assert serving_servers(env) == [proxy.SERVICE_SERVER]
    deployed = next(r for r in records(env) if r.id == record["id"])
    assert deployed.kept_container is None  # it serves: no longer kept


def test_a_monitor_breach_in_the_window_switches_back(
    env: DtdepEnv, v2: str, tmp_path: Path
) -> None:
    (old,) = app_containers(env)
    deploy(env, v2)
    failing = (
        "[[checks.probes]]\n"
        'name = "always fails"\n'
        'path = "/dtwatch-no-such-route"\n'
        'suites = ["monitor"]\n\n'
        "[checks.monitor]\n"
        "interval_s = 1.0\n"
        "consecutive_failures = 1\n"
        "container_stats = false\n"
    )
    config = short_window(env, tmp_path / "deploy.toml", 3600, extra=failing)
    argv = ("monitor", "--env", "prod", "--duration", "5s", "--rollback-on-breach")
    result = env.cli(*argv, config=config)
    assert result.exit_code == 1, result.output
    last = records(env)[-1]
    assert last.kind == "rollback" and last.outcome == "succeeded"
    assert last.reason.startswith("monitor breach")
    assert last.watch_window_rollback is True
    assert ids(env) == {old.id}
    assert env.stack.health()["version"] == "1.15.1"


def test_a_new_deploy_replaces_the_kept_container_and_monitor_removes_it_after_the_window(
    env: DtdepEnv, v2: str, v2b: str, tmp_path: Path
) -> None:
    (first,) = app_containers(env)
    deploy(env, v2)
    (second,) = ids(env) - {first.id}
    window = short_window(env, tmp_path / "deploy.toml", 1)
    record = deploy(env, v2b, config=window)
    # Only the release immediately before is kept: the first container is gone.
    assert record["kept_container"] == second
    (third,) = ids(env) - {second}
    assert ids(env) == {second, third}
    time.sleep(2.5)  # the 1 s window is over, and the release finished over 2 s ago
    argv = ("monitor", "--env", "prod", "--duration", "1s", "--only-after-release", "2s")
    result = env.cli(*argv, config=window)
    assert result.exit_code == 0, result.output
    assert ids(env) == {third}
    assert serving_servers(env) == [proxy.SERVICE_SERVER]
    assert env.stack.health()["version"] == "1.15.2"
    kept_by = next(r for r in records(env) if r.id == record["id"])
    assert kept_by.kept_container is None
    assert any("stopped and removed: its watch window ended" in n for n in kept_by.notes)


def test_a_rollback_after_the_window_takes_the_cold_path(
    env: DtdepEnv, v2: str, tmp_path: Path
) -> None:
    (before,) = app_containers(env)  # v2b serves
    window = short_window(env, tmp_path / "deploy.toml", 1)
    deploy(env, v2, config=window)
    assert before.id in ids(env)
    time.sleep(1.5)
    with OpenLoad(env.stack.app_port, rate_per_s=RATE) as load:
        result = env.cli("rollback", "--env", "prod", "--yes", config=window)
    samples = load.stop()
    assert result.exit_code == 0, result.output
    assert failures(samples) == []
    rollback = json.loads(result.stdout)["result"]
    assert rollback["watch_window_rollback"] is False
    assert any(
        "not a watch-window rollback: the watch window ended" in n for n in rollback["notes"]
    )
    # The cold (rolling) path: a new container of the release before, started and switched to.
    assert {"start", "healthy", "smoke", "switch", "drain"} <= set(rollback["timings"])
    (now,) = app_containers(env)
    assert now.id != before.id
    assert now.image.id == env.stack.client.images.get(before.attrs["Image"]).id
