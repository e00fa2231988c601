"""Deploy (recreate) on the real engine: the runbook's order, idempotence, the lock (two
deploys at once), a failing migration, an image that never becomes healthy, a deploy killed
half-way. In each, the rows that were there before are there after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from deploytools.session import open_environment
from tests.helpers.shared_stack import (
    BROKEN_MIGRATION,
    NEVER_HEALTHY,
    DtdepEnv,
    ImageVariants,
    module_env,
)

pytestmark = pytest.mark.integration

V1, V2 = "rbac-api-test:1.15.1", "rbac-api-test:1.15.2"


env = module_env("dep")


def history_of(env: DtdepEnv) -> tuple[list[Any], Any]:
    with open_environment(env.ctx(), env.environment) as session:
        return session.history.releases(), session.history.lock()


def app_image(env: DtdepEnv) -> str:
    container = env.stack.container("app")
    return str(container.attrs["Config"]["Image"])


def old_rows(env: DtdepEnv) -> dict[str, int]:
    """Row counts of the tables release 1.15.1 has (later ones add tables)."""
    counts = env.stack.table_row_counts()
    return {t: n for t, n in counts.items() if t != "role_assignment_audit"}


def test_commands_that_only_read_do_not_create_the_store(env: DtdepEnv) -> None:
    """First in the module: the environment's store volume does not exist yet."""
    import docker.errors

    volumes = env.stack.client.volumes
    with pytest.raises(docker.errors.NotFound):
        volumes.get(env.store_volume)
    for argv in (["status"], ["history"], ["lock", "show"], ["backup", "list"]):
        result = env.cli(*argv, "--env", "prod")
        assert result.exit_code == 0, (argv, result.output)
    assert json.loads(env.cli("history", "--env", "prod").stdout)["result"]["releases"] == []
    with pytest.raises(docker.errors.NotFound):
        volumes.get(env.store_volume)
    # A command that writes creates it.
    with open_environment(env.ctx(), env.environment) as session:
        session.store.ensure_dir("prod")
    assert volumes.get(env.store_volume).name == env.store_volume


def test_deploy_in_runbook_order_then_idempotent(env: DtdepEnv) -> None:
    before = old_rows(env)
    result = env.cli("deploy", "--env", "prod", "--image", V2)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["result"]["record"]
    assert record["outcome"] == "succeeded"
    assert record["image"] == V2 and record["image_id"].startswith("sha256:")
    assert record["previous_image"] == V1
    assert (record["revision_before"], record["revision_after"]) == ("0001", "0002")
    assert record["backup_id"]
    assert set(record["timings"]) == {"backup", "stop", "migrate", "start", "healthy"}
    assert app_image(env) == V2
    env.stack.wait_healthy("app")
    assert old_rows(env) == before
    assert env.stack.psql("SELECT version_num FROM alembic_version") == "0002"
    # The release's image is kept on the engine under a tag naming the release.
    kept = env.stack.client.images.get(f"rbac-api-test:prod-release-{record['id']}")
    assert kept.id == record["image_id"]

    again = env.cli("deploy", "--env", "prod", "--image", V2)
    assert again.exit_code == 0, again.output
    body = json.loads(again.stdout)["result"]
    assert body["changed"] is False
    assert "nothing to do" in body["message"]
    records, lock = history_of(env)
    assert [r.outcome for r in records] == ["succeeded"]
    assert lock is None


def test_second_deploy_is_refused_while_the_lock_is_held(env: DtdepEnv) -> None:
    with open_environment(env.ctx(), env.environment) as session:
        held = session.history.acquire("deploy", ttl_s=600)
        try:
            result = env.cli("deploy", "--env", "prod", "--image", V1)
            assert result.exit_code == 4
            error = json.loads(result.stdout)["error"]
            assert error["type"] == "LockHeld"
            assert held.holder in error["message"] and held.since in error["message"]
            assert "nothing was done" in error["untouched"]
            # Breaking a fresh lock is refused too.
            broke = env.cli("lock", "break", "--env", "prod")
            assert broke.exit_code == 4
        finally:
            session.history.release(held)
    assert app_image(env) == V2


def test_failing_migration_keeps_schema_and_old_release(
    env: DtdepEnv, image_variants: ImageVariants
) -> None:
    broken = image_variants.build(
        V2,
        "rbac-api-test:dtdep-broken-migration",
        dockerfile="COPY 0003_broken.py /app/migrations/versions/0003_broken.py\n",
        files={"0003_broken.py": BROKEN_MIGRATION},
    )
    before = old_rows(env)
    result = env.cli("deploy", "--env", "prod", "--image", broken)
    assert result.exit_code == 3, result.output
    error = json.loads(result.stdout)["error"]
    assert "migration" in error["message"]
    assert "revision 0002" in error["untouched"]
    assert "serves again" in error["untouched"]
    assert env.stack.psql("SELECT version_num FROM alembic_version") == "0002"
    assert env.stack.psql("SELECT to_regclass('public.dtdep_half_done') IS NULL") == "t"
    assert app_image(env) == V2
    env.stack.wait_healthy("app")
    assert env.stack.health()["status"] == "ok"
    assert old_rows(env) == before
    records, lock = history_of(env)
    assert records[-1].outcome == "failed" and records[-1].image == broken
    assert lock is None


def test_unhealthy_image_is_rolled_back_automatically(
    env: DtdepEnv, docker_client: Any, image_variants: ImageVariants, tmp_path: Path
) -> None:
    never_healthy = image_variants.build(
        V2, "rbac-api-test:dtdep-never-healthy", dockerfile=NEVER_HEALTHY, files={}
    )
    # 10 s: the rollback's 1.15.2 is healthy within seconds.
    config = env.config_with_health_timeout(tmp_path, 10)
    before = old_rows(env)
    result = env.cli("deploy", "--env", "prod", "--image", never_healthy, config=config)
    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["error"]
    assert "did not become healthy" in error["message"]
    assert "rolled back automatically" in error["untouched"]
    env.stack.wait_healthy("app")
    assert app_image(env) != never_healthy
    assert env.stack.container("app").image.id == docker_client.images.get(V2).id
    assert old_rows(env) == before
    records, lock = history_of(env)
    assert [r.kind for r in records[-2:]] == ["deploy", "rollback"]
    assert records[-2].outcome == "rolled-back"
    assert records[-1].outcome == "succeeded" and records[-1].restored_backup is None
    assert lock is None


def wait_for_record(env: DtdepEnv, process: Any, predicate: Any) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        records, _ = history_of(env)
        if records and predicate(records[-1]):
            return
        assert process.poll() is None, "the deploy ended before the test could look at it"
        time.sleep(0.3)
    raise AssertionError("the deploy's record did not reach the expected state")


def test_deploy_killed_half_way_is_recovered_by_a_rerun(
    env: DtdepEnv, image_variants: ImageVariants
) -> None:
    # Another build of 1.15.2 (same migrations, another image id): a forward deploy.
    rebuilt = image_variants.build(
        V2,
        "rbac-api-test:dtdep-rebuilt",
        dockerfile="LABEL dtdep=rebuilt\n",
        files={},
    )
    before = old_rows(env)
    argv = [sys.executable, "-m", "deploytools", "--config", str(env.config_path)]
    process = subprocess.Popen(
        [*argv, "deploy", "--env", "prod", "--image", rebuilt, "--no-backup-check"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        # While it runs, a second deploy is refused at once, naming it.
        wait_for_record(env, process, lambda r: r.outcome == "in-progress")
        second = env.cli("deploy", "--env", "prod", "--image", V2)
        assert second.exit_code == 4
        assert f"(pid {process.pid})" in second.stderr
        # Kill it once the app is stopped (its record has the "stop" timing): mid-deploy.
        wait_for_record(env, process, lambda r: r.outcome == "in-progress" and "stop" in r.timings)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    records, lock = history_of(env)
    assert records[-1].outcome == "in-progress"
    assert lock is not None  # the killed holder never released it

    result = env.cli("deploy", "--env", "prod", "--image", rebuilt, "--no-backup-check")
    assert result.exit_code == 0, result.output
    records, lock = history_of(env)
    assert lock is None
    assert records[-2].outcome == "interrupted"
    assert records[-1].outcome == "succeeded" and records[-1].image == rebuilt
    env.stack.wait_healthy("app")
    assert app_image(env) == rebuilt
    assert old_rows(env) == before


def test_history_shows_releases_backups_and_lock(env: DtdepEnv) -> None:
    result = env.cli("history", "--env", "prod")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)["result"]
    kinds = [r["kind"] for r in data["releases"]]
    assert "rollback" in kinds and "deploy" in kinds
    assert data["current"]["image"] == "rbac-api-test:dtdep-rebuilt"
    assert data["backups"] and data["lock"] is None


def test_status_shows_the_release_backups_and_lock(env: DtdepEnv) -> None:
    result = env.cli("status", "--env", "prod")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)["result"]
    assert data["release"]["image"] == "rbac-api-test:dtdep-rebuilt"
    assert data["backups"] and data["backups"][-1][1] is True
    assert data["lock"] is None and data["history_error"] is None
