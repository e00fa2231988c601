"""Backups on the real engine and a real PostgreSQL: create, verify, list, restore, and the faults
(unknown environment, database down mid-dump, a store too small, a corrupted backup)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.context import StepContext
from deploytools.database import Database
from deploytools.errors import CheckFailed, DeployError, ExternalCommandFailed
from deploytools.session import open_environment
from deploytools.steps import backup as backup_step
from tests.helpers.shared_stack import DtdepEnv, module_env, write_config

pytestmark = pytest.mark.integration


env = module_env("bk")


def store_files(env: DtdepEnv) -> list[str]:
    with open_environment(env.ctx(), env.environment) as session:
        return session.store.list_files(f"{env.environment}/backups")


def test_create_writes_a_complete_manifest_and_verifies(env: DtdepEnv) -> None:
    messages: list[str] = []
    rows = env.stack.table_row_counts()
    manifest = backup_step.create(env.ctx(messages), environment=env.environment)

    assert manifest.revision == "0001"
    assert {t.removeprefix("public."): n for t, n in manifest.row_counts.items()} == rows
    assert manifest.row_counts["public.users"] >= 1  # the admin
    assert len(manifest.sha256) == 64
    assert manifest.size > 0
    assert "pg_dump (PostgreSQL) 15" in manifest.pg_dump_version
    assert manifest.image == "rbac-api-test:1.15.1"
    assert any("complete" in m for m in messages)
    with open_environment(env.ctx(), env.environment) as session:
        dump = session.history.backup_file(manifest.id)
        assert session.store.file_mode(dump) == "600"
        assert session.store.file_mode(f"{env.environment}/backups") == "700"
        assert session.store.file_mode("") == "700"
        assert session.store.sha256(dump) == manifest.sha256
        assert session.store.size(dump) == manifest.size

    verification = backup_step.verify(env.ctx(), environment=env.environment, backup_id=manifest.id)
    assert verification.ok and verification.restore_ok and verification.row_counts_ok

    listed = env.cli("backup", "list", "--env", env.environment)
    assert listed.exit_code == 0, listed.output
    result = json.loads(listed.stdout)["result"]
    ids = [b["id"] for b in result["backups"]]
    assert manifest.id in ids
    assert result["verifications"][manifest.id]["ok"] is True
    # No scratch database is left behind by the test restore.
    databases = env.stack.psql("SELECT datname FROM pg_database ORDER BY 1").split()
    assert not [d for d in databases if "__dt" in d]


def test_unknown_environment_is_a_usage_error(env: DtdepEnv) -> None:
    result = env.cli("backup", "create", "--env", "prdo")
    assert result.exit_code == 2
    assert 'unknown environment "prdo"' in result.stderr
    assert 'did you mean "prod"' in result.stderr


def test_restore_brings_rows_back_after_a_safety_backup(env: DtdepEnv) -> None:
    manifest = backup_step.create(env.ctx(), environment=env.environment)
    before = env.stack.table_row_counts()
    env.stack.psql(
        "INSERT INTO roles (name, description) VALUES ('dtdep-a', 'x'), ('dtdep-b', 'y')"
    )
    assert env.stack.table_row_counts()["roles"] == before["roles"] + 2

    result = env.cli("backup", "restore", "--env", env.environment, manifest.id, "--yes")
    assert result.exit_code == 0, result.output
    restored = json.loads(result.stdout)["result"]
    assert restored["rows_dropped"] == 2
    assert restored["table_differences"] == {"public.roles": 2}
    assert env.stack.table_row_counts() == before
    # The safety backup holds the two rows the restore dropped, and is verified.
    with open_environment(env.ctx(), env.environment) as session:
        safety = session.history.manifest(restored["safety_backup_id"])
        verification = session.history.verification(safety.id)
    assert safety.row_counts["public.roles"] == before["roles"] + 2
    assert verification is not None and verification.ok
    # Taken from the replaced database after the swap, which is then dropped.
    assert restored["kept_database"] is None and restored["safety_error"] is None
    assert scratch_databases(env) == []
    env.stack.wait_healthy("app")
    assert env.stack.health()["status"] == "ok"


def test_a_failed_safety_backup_keeps_the_replaced_database(
    env: DtdepEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = backup_step.create(env.ctx(), environment=env.environment)
    before = env.stack.table_row_counts()
    env.stack.psql("INSERT INTO roles (name, description) VALUES ('dtdep-kept', 'x')")
    counts = Database.row_counts

    def one_row_lost(self: Database, **kwargs: Any) -> dict[str, int]:
        # The safety backup's test restore (the only __dtverify_ one here) comes out short.
        found = counts(self, **kwargs)
        if "__dtverify_" in (kwargs.get("database") or ""):
            found["public.roles"] -= 1
        return found

    monkeypatch.setattr(Database, "row_counts", one_row_lost)
    result = env.cli("backup", "restore", "--env", env.environment, manifest.id, "--yes")
    monkeypatch.undo()
    # The restore itself succeeded: the backup's data serves.
    assert result.exit_code == 0, result.output
    restored = json.loads(result.stdout)["result"]
    assert env.stack.table_row_counts() == before
    kept = restored["kept_database"]
    assert kept is not None and kept.startswith("rbac__dtsafety_")
    assert restored["safety_backup_id"] is None
    assert f"kept in database {kept}" in restored["safety_error"]
    assert f"backup secure --env {env.environment} {kept}" in restored["safety_error"]
    assert "warning: the safety backup of the replaced database failed" in result.stderr
    # The data from before the restore is all there, under the kept name.
    with open_environment(env.ctx(), env.environment) as session:
        old = Database.of(session.target).row_counts(database=kept)
    assert old["public.roles"] == before["roles"] + 1
    # Listed; and neither a verified backup's scratch clean-up nor anything else drops it.
    backup_step.create(env.ctx(), environment=env.environment, verify=True)
    listed = env.cli("backup", "list", "--env", env.environment)
    assert json.loads(listed.stdout)["result"]["kept_databases"] == [kept]
    human = CliRunner().invoke(
        cli, ["--config", str(env.config_path), "backup", "list", "--env", env.environment]
    )
    assert f"kept database {kept}" in human.stdout

    secured = env.cli("backup", "secure", "--env", env.environment, kept)
    assert secured.exit_code == 0, secured.output
    safety_id = json.loads(secured.stdout)["result"]["safety_backup_id"]
    with open_environment(env.ctx(), env.environment) as session:
        safety = session.history.manifest(safety_id)
        verification = session.history.verification(safety_id)
    assert safety.row_counts["public.roles"] == before["roles"] + 1
    assert verification is not None and verification.ok
    assert scratch_databases(env) == []
    env.stack.wait_healthy("app")
    assert env.stack.health()["status"] == "ok"


def test_corrupted_backup_fails_verify_and_restore_refuses(env: DtdepEnv) -> None:
    manifest = backup_step.create(env.ctx(), environment=env.environment)
    before = env.stack.table_row_counts()
    with open_environment(env.ctx(), env.environment) as session:
        path = session.store.path(session.history.backup_file(manifest.id))
        # Overwrite 64 bytes in the middle of the archive.
        flipped = session.store.sh(
            'dd if=/dev/zero of="$1" bs=1 count=64 seek=200 conv=notrunc 2>/dev/null', path
        )
        assert flipped.exit_code == 0

    with pytest.raises(CheckFailed, match="corrupted"):
        backup_step.verify(env.ctx(), environment=env.environment, backup_id=manifest.id)
    result = env.cli("backup", "restore", "--env", env.environment, manifest.id, "--yes")
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert "corrupted" in error["message"]
    assert error["untouched"] == "the database was not touched"
    assert env.stack.table_row_counts() == before
    listed = backup_step.list_backups(env.ctx(), environment=env.environment)
    verification = listed.verifications[manifest.id]
    assert verification is not None and not verification.ok and not verification.sha256_ok


def scratch_databases(env: DtdepEnv) -> list[str]:
    return [d for d in env.stack.psql("SELECT datname FROM pg_database").split() if "__dt" in d]


@pytest.mark.parametrize("verify", [False, True], ids=["dump", "dump-and-verify"])
def test_database_down_during_backup_leaves_no_backup(
    env: DtdepEnv, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    # Enough data that the dump streams for a while; the database is killed once it started.
    env.stack.psql(
        "CREATE TABLE IF NOT EXISTS dtdep_bulk AS SELECT g AS id, "
        "md5(g::text) || md5(random()::text) AS filler FROM generate_series(1, 300000) g"
    )
    before = env.stack.table_row_counts()
    files_before = store_files(env)
    db = env.stack.container("db")

    # A progress line after every chunk; the first one kills the database mid-stream.
    monkeypatch.setattr(backup_step, "PROGRESS_EVERY", 1)

    def kill_when_dumping(message: str) -> None:
        if "written" in message and db.status != "exited":
            db.kill()
            db.reload()

    ctx = StepContext(config=env.config, progress=kill_when_dumping)
    try:
        with pytest.raises(DeployError) as caught:
            backup_step.create(ctx, environment=env.environment, verify=verify)
        assert isinstance(caught.value, ExternalCommandFailed)
        assert caught.value.exit_code == 3
        assert "no backup was kept" in (caught.value.untouched or "")
    finally:
        db.start()
        env.stack.wait_healthy("db")
    assert store_files(env) == files_before  # nothing partial, no temporary file
    assert env.stack.table_row_counts() == before
    if verify:
        # The server died before the scratch database could be dropped: the error says so,
        # and the next verified backup drops it.
        [left] = scratch_databases(env)
        assert f"the scratch database {left} is left" in (caught.value.untouched or "")
        messages: list[str] = []
        backup_step.create(env.ctx(messages), environment=env.environment, verify=True)
        assert any(f"dropped the scratch database {left}" in m for m in messages)
    assert scratch_databases(env) == []
    env.stack.psql("DROP TABLE dtdep_bulk")


def test_create_verifies_in_the_same_pass(env: DtdepEnv) -> None:
    files_before = store_files(env)
    result = env.cli("backup", "create", "--env", env.environment)
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)["result"]
    manifest, verification = created["manifest"], created["verification"]
    assert verification["ok"] and verification["restore_ok"] and verification["row_counts_ok"]
    assert verification["detail"] == backup_step.VERIFIED_WHILE_DUMPING
    assert scratch_databases(env) == []
    # What the stream stored is what the manifest says, and a later verify agrees.
    with open_environment(env.ctx(), env.environment) as session:
        dump = session.history.backup_file(manifest["id"])
        assert session.store.sha256(dump) == manifest["sha256"]
        assert session.store.size(dump) == manifest["size"]
        assert session.store.file_mode(dump) == "600"
    again = backup_step.verify(env.ctx(), environment=env.environment, backup_id=manifest["id"])
    assert again.ok
    assert f"{manifest['id']}.dump" in set(store_files(env)) - set(files_before)


def test_restore_side_failing_mid_stream_keeps_nothing(
    env: DtdepEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scratch database's restore session is ended while the dump streams into it.
    env.stack.psql(
        "CREATE TABLE IF NOT EXISTS dtdep_bulk AS SELECT g AS id, "
        "md5(g::text) || md5(random()::text) AS filler FROM generate_series(1, 300000) g"
    )
    files_before = store_files(env)
    monkeypatch.setattr(backup_step, "PROGRESS_EVERY", 1)
    ended: list[str] = []

    def end_the_restore(message: str) -> None:
        # At the first chunk pg_restore may still be reading the archive's header: try again
        # at each chunk until its session is there to end.
        if "written" in message and not ended:
            killed = env.stack.psql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE position('__dtverify_' in datname) > 0 AND application_name = 'pg_restore'"
            )
            if killed != "0":
                ended.append(killed)

    ctx = StepContext(config=env.config, progress=end_the_restore)
    try:
        with pytest.raises(CheckFailed) as caught:
            backup_step.create(ctx, environment=env.environment, verify=True)
    finally:
        env.stack.psql("DROP TABLE dtdep_bulk")
    assert ended == ["1"]
    assert caught.value.exit_code == 1
    assert "the test restore failed" in caught.value.message
    assert "no backup was kept" in (caught.value.untouched or "")
    assert store_files(env) == files_before
    assert scratch_databases(env) == []


def test_other_row_counts_in_the_test_restore_keep_nothing(
    env: DtdepEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    files_before = store_files(env)
    counts = Database.row_counts

    def one_row_lost(self: Database, **kwargs: Any) -> dict[str, int]:
        found = counts(self, **kwargs)
        if "__dtverify_" in (kwargs.get("database") or ""):
            found["public.roles"] -= 1
        return found

    monkeypatch.setattr(Database, "row_counts", one_row_lost)
    result = env.cli("backup", "create", "--env", env.environment)
    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["error"]
    assert "other row counts than the dump's snapshot: public.roles -1" in error["message"]
    assert store_files(env) == files_before
    assert scratch_databases(env) == []


def test_store_too_small_is_refused(env: DtdepEnv, docker_client: Any, tmp_path: Path) -> None:
    volume = f"{env.stack.project}-tiny"
    subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True, check=False)
    docker_client.volumes.create(
        name=volume,
        driver="local",
        driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"},
    )
    try:
        config = write_config(
            tmp_path / "deploy.toml", {"prod": env.stack}, store=f"volume:{volume}"
        )
        before = env.stack.table_row_counts()
        result = CliRunner().invoke(
            cli,
            ["--config", str(config.path), "backup", "create", "--env", "prod"],
            catch_exceptions=False,
        )
        assert result.exit_code == 3
        assert "less than twice the database's" in result.stderr
        assert "No backup was taken" in result.stderr
        assert env.stack.table_row_counts() == before
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True, check=False)


def test_retention_keeps_newest_verified_and_the_pinned_one(env: DtdepEnv, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "deploy.toml",
        {"prod": env.stack},
        store=f"volume:{env.store_volume}",
        retention=1,
    )
    ctx = StepContext(config=config)
    with open_environment(ctx, "prod") as session:
        first = backup_step.create_in(session)
        backup_step.verify_in(session, first.id)
        second = backup_step.create_in(session)
        backup_step.verify_in(session, second.id)
        deleted = backup_step.prune_in(session, keep=1)
        remaining = [m.id for m in session.history.manifests()]
    assert first.id in deleted
    assert remaining == [second.id]


def test_a_host_directory_store_holds_private_files(env: DtdepEnv, tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = write_config(tmp_path / "deploy.toml", {"prod": env.stack}, store=f"dir:{store}")
    manifest = backup_step.create(StepContext(config=config), environment="prod")
    dump = store / "prod" / "backups" / f"{manifest.id}.dump"
    assert dump.stat().st_size == manifest.size
    assert oct(dump.stat().st_mode & 0o777) == "0o600"
    assert oct(store.stat().st_mode & 0o777) == "0o700"
    described = json.loads((store / "prod" / "backups" / f"{manifest.id}.json").read_text())
    assert described["sha256"] == manifest.sha256
