"""deploy --strategy rolling behind the stack's HAProxy proxy, on the real engine, under a steady
open-model load through the proxy: no request fails while a release takes over, while a broken
release is tried and abandoned, or while a rollback switches back; a release whose migrations
are not expand-only is refused. On the shared dtdep stack (tests/helpers/shared_stack.py), with
the watch window off ([deploy] watch_window_s = 0: the old container is stopped at the switch;
tests/integration/test_watch_window.py keeps it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from deploytools import proxy
from tests.helpers.load import OpenLoad, failures
from tests.helpers.shared_stack import (
    NEVER_HEALTHY,
    DtdepEnv,
    ImageVariants,
    app_containers,
    module_env,
    records,
    serving_version,
)
from tests.helpers.stacks import proxy_servers

if TYPE_CHECKING:
    from tests.helpers.stacks import ReleaseImages

pytestmark = pytest.mark.integration

EXPAND_ONLY = 'LABEL deploytools.migrations.expand-only="true"\n'
RATE = 50.0  # requests/s through the proxy; the benchmark measures at 100


env = module_env("roll", health_timeout_s=20, watch_window_s=0)


@pytest.fixture(scope="module")
def v2_expand_only(image_variants: ImageVariants, release_images: ReleaseImages) -> str:
    """1.15.2 (its migration adds a table) labelled expand-only, as release verify would."""
    return image_variants.build(
        release_images["1.15.2"], "rbac-api-test:dtroll-1.15.2", dockerfile=EXPAND_ONLY, files={}
    )


def test_rolling_is_refused_for_a_release_not_declared_expand_only(
    env: DtdepEnv, release_images: ReleaseImages
) -> None:
    result = env.cli(
        "deploy", "--env", "prod", "--image", release_images["1.15.2"], "--strategy", "rolling"
    )
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert "refused" in error["message"] and "expand-only" in error["message"]
    assert "recreate" in error["hint"] and "maintenance window" in error["hint"]
    assert error["untouched"] == "nothing was done"
    assert serving_version(env) == "1.15.1"
    assert records(env) == []


def test_rolling_deploy_under_load_fails_no_request(env: DtdepEnv, v2_expand_only: str) -> None:
    with OpenLoad(env.stack.app_port, rate_per_s=RATE) as load:
        result = env.cli(
            "deploy", "--env", "prod", "--image", v2_expand_only, "--strategy", "rolling"
        )
    samples = load.stop()
    assert result.exit_code == 0, result.output
    assert len(samples) > 0
    assert failures(samples) == []
    record = json.loads(result.stdout)["result"]["record"]
    assert record["outcome"] == "succeeded" and record["strategy"] == "rolling"
    assert (record["revision_before"], record["revision_after"]) == ("0001", "0002")
    assert {"migrate", "start", "healthy", "smoke", "switch", "drain"} <= set(record["timings"])
    (only,) = app_containers(env)
    assert only.attrs["Config"]["Image"] == v2_expand_only
    assert serving_version(env) == "1.15.2"


def test_a_release_that_never_becomes_healthy_is_abandoned_under_load(
    env: DtdepEnv, image_variants: ImageVariants, v2_expand_only: str, tmp_path: Path
) -> None:
    never_healthy = image_variants.build(
        v2_expand_only,
        "rbac-api-test:dtroll-never-healthy",
        dockerfile="LABEL dtroll=never-healthy\n" + NEVER_HEALTHY,
        files={},
    )
    quick = env.config_with_health_timeout(tmp_path, 10)  # the others have the module's 20 s
    before = app_containers(env)
    with OpenLoad(env.stack.app_port, rate_per_s=RATE) as load:
        argv = ("deploy", "--env", "prod", "--image", never_healthy, "--strategy", "rolling")
        result = env.cli(*argv, config=quick)
    samples = load.stop()
    assert result.exit_code == 1, result.output
    assert len(samples) > 0
    assert failures(samples) == []
    error = json.loads(result.stdout)["error"]
    assert "did not take over" in error["message"]
    assert "old release kept serving" in error["untouched"]
    assert [c.id for c in app_containers(env)] == [c.id for c in before]
    assert serving_version(env) == "1.15.2"
    last = records(env)[-1]
    assert last.image == never_healthy and last.outcome == "failed"


def test_rollback_behind_the_proxy_switches_back_under_load(env: DtdepEnv) -> None:
    with OpenLoad(env.stack.app_port, rate_per_s=RATE) as load:
        result = env.cli("rollback", "--env", "prod", "--yes")
    samples = load.stop()
    assert result.exit_code == 0, result.output
    assert len(samples) > 0
    assert failures(samples) == []
    assert serving_version(env) == "1.15.1"
    (only,) = app_containers(env)
    assert only.attrs["Config"]["Image"] != "rbac-api-test:dtroll-1.15.2"
    last = records(env)[-1]
    assert last.kind == "rollback" and last.outcome == "succeeded"
    assert {"switch", "drain"} <= set(last.timings)


def test_the_proxys_runtime_api_is_out_of_the_apps_reach(env: DtdepEnv) -> None:
    """The API that moves the traffic listens on the proxy's loopback only: an app container
    (or anything else on the project's network) cannot switch it."""
    (app,) = app_containers(env)
    probe = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('proxy', {proxy.ADMIN_PORT}), timeout=3)\n"
        "    print('reached')\n"
        "except OSError as error:\n"
        "    print('refused', type(error).__name__)\n"
    )
    code, output = app.exec_run(["python3", "-c", probe])
    assert code == 0, output
    assert output.decode().startswith("refused"), output
    # ... while it answers inside the proxy itself, for deploytools' session.
    servers = proxy_servers(env.stack)
    assert set(servers) == {proxy.SERVICE_SERVER, *proxy.SLOTS}
    assert [name for name, server in servers.items() if server.serving] == [proxy.SERVICE_SERVER]
