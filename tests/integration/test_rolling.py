"""deploy --strategy rolling behind the stack's nginx proxy, on the real engine, under a steady
open-model load through the proxy: no request fails while a release takes over, while a broken
release is tried and abandoned, or while a rollback switches back; a release whose migrations
are not expand-only is refused. Docker prefix dtroll-."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from conftest import ComposeStack
from dtdep_env import DtdepEnv, _remove_volume, build_variant, stack_env, write_config
from dtroll_load import OpenLoad, failures

from deploytools.cli import cli
from deploytools.steps.backup import open_environment

if TYPE_CHECKING:
    from conftest import ReleaseImages

pytestmark = pytest.mark.integration

EXPAND_ONLY = 'LABEL deploytools.migrations.expand-only="true"\n'
RATE = 50.0  # requests/s through the proxy; the benchmark measures at 100


@pytest.fixture(scope="module")
def env(
    docker_client: Any,
    postgres_image: str,
    release_images: ReleaseImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DtdepEnv]:
    v1 = release_images["1.15.1"]
    release_images["1.15.2"]
    project = f"dtroll-{os.getpid()}"
    store = f"{project}-store"
    stack = ComposeStack(project=project, env=stack_env(postgres_image, v1), client=docker_client)
    try:
        stack.up()
        stack.migrate()
        config_path = tmp_path_factory.mktemp("dtroll") / "deploy.toml"
        config = write_config(
            config_path, {"prod": stack}, store=f"volume:{store}", health_timeout_s=20
        )
        yield DtdepEnv(stack=stack, config_path=config_path, config=config, store_volume=store)
    finally:
        for container in docker_client.containers.list(all=True, filters={"name": project}):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        stack.down()
        _remove_volume(docker_client, store)
        for image in docker_client.images.list(name="rbac-api-test"):
            for tag in image.tags:
                if tag.split(":", 1)[1].startswith(("dtroll-", "prod-release-")):
                    with contextlib.suppress(Exception):
                        docker_client.api.remove_image(tag)


@pytest.fixture(scope="module")
def v2_expand_only(docker_client: Any, release_images: ReleaseImages) -> str:
    """1.15.2 (its migration adds a table) labelled expand-only, as release verify would."""
    return build_variant(
        docker_client,
        release_images["1.15.2"],
        "rbac-api-test:dtroll-1.15.2",
        dockerfile=EXPAND_ONLY,
        files={},
    )


def deploytools(env: DtdepEnv, *args: str) -> Any:
    return CliRunner().invoke(
        cli, ["--config", str(env.config_path), "--json", *args], catch_exceptions=False
    )


def app_containers(env: DtdepEnv) -> list[Any]:
    return env.stack.client.containers.list(
        all=True,
        filters={
            "label": [
                f"com.docker.compose.project={env.stack.project}",
                "com.docker.compose.service=app",
                "com.docker.compose.oneoff=False",
            ]
        },
    )


def serving_version(env: DtdepEnv) -> str:
    return str(env.stack.health()["version"])


def records(env: DtdepEnv) -> list[Any]:
    with open_environment(env.ctx(), env.environment) as session:
        return session.history.releases()


def test_rolling_is_refused_for_a_release_not_declared_expand_only(
    env: DtdepEnv, release_images: ReleaseImages
) -> None:
    result = deploytools(
        env, "deploy", "--env", "prod", "--image", release_images["1.15.2"], "--strategy", "rolling"
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
        result = deploytools(
            env, "deploy", "--env", "prod", "--image", v2_expand_only, "--strategy", "rolling"
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
    env: DtdepEnv, docker_client: Any, v2_expand_only: str
) -> None:
    never_healthy = build_variant(
        docker_client,
        v2_expand_only,
        "rbac-api-test:dtroll-never-healthy",
        dockerfile="LABEL dtroll=never-healthy\n"
        'CMD ["sh", "-c", "trap \'exit 0\' TERM; sleep 3600 & wait"]\n',
        files={},
    )
    before = app_containers(env)
    with OpenLoad(env.stack.app_port, rate_per_s=RATE) as load:
        result = deploytools(
            env, "deploy", "--env", "prod", "--image", never_healthy, "--strategy", "rolling"
        )
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
        result = deploytools(env, "rollback", "--env", "prod", "--yes")
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
