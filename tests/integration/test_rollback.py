"""Rollback on the real engine: without a restore when the newer release's migrations may be
expand-only, with one when its record says they are not or when asked (--restore-db); and
migrate's backup gate and --sql."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.database import Database
from deploytools.session import open_environment
from deploytools.steps.migrate import EXPAND_ONLY_LABEL
from tests.helpers.shared_stack import DtdepEnv, ImageVariants, module_env

pytestmark = pytest.mark.integration

V1, V2 = "rbac-api-test:1.15.1", "rbac-api-test:1.15.2"


env = module_env("rb")


def deploy(env: DtdepEnv, image: str) -> dict[str, Any]:
    result = env.cli("deploy", "--env", "prod", "--image", image)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout)["result"]["record"])


def write_roles(env: DtdepEnv, *names: str) -> None:
    values = ", ".join(f"('{n}', 'written after the deploy')" for n in names)
    env.stack.psql(f"INSERT INTO roles (name, description) VALUES {values}")  # noqa: S608 - test literals


def revision(env: DtdepEnv) -> str:
    return env.stack.psql("SELECT version_num FROM alembic_version")


def app_image_id(env: DtdepEnv) -> str:
    return str(env.stack.container("app").image.id)


def test_not_expand_only_release_is_rolled_back_with_its_backup(
    env: DtdepEnv, docker_client: Any, image_variants: ImageVariants
) -> None:
    contracting = image_variants.build(
        V2,
        "rbac-api-test:dtdep-not-expand-only",
        dockerfile=f'LABEL {EXPAND_ONLY_LABEL}="false"\n',
        files={},
    )
    rows_at_deploy = env.stack.table_row_counts()
    record = deploy(env, contracting)
    assert record["expand_only"] is False and record["revision_after"] == "0002"
    write_roles(env, "dtdep-lost-1", "dtdep-lost-2")

    result = env.cli("rollback", "--env", "prod")
    assert result.exit_code == 0, result.output
    rollback = json.loads(result.stdout)["result"]
    assert rollback["restored_backup"] == record["backup_id"]
    assert any("drops 2 rows" in note for note in rollback["notes"])
    assert "drops 2 rows" in result.stderr
    assert revision(env) == "0001"
    assert env.stack.table_row_counts() == rows_at_deploy
    assert app_image_id(env) == docker_client.images.get(V1).id
    env.stack.wait_healthy("app")
    assert env.stack.health()["status"] == "ok"


def test_rollback_without_restore_keeps_the_writes(env: DtdepEnv, docker_client: Any) -> None:
    record = deploy(env, V2)
    assert (record["revision_before"], record["revision_after"]) == ("0001", "0002")
    write_roles(env, "dtdep-kept")
    rows = env.stack.table_row_counts()

    result = env.cli("rollback", "--env", "prod")
    assert result.exit_code == 0, result.output
    rollback = json.loads(result.stdout)["result"]
    assert rollback["restored_backup"] is None
    assert "pass --restore-db" in result.stderr
    assert rollback["image"] == V1 and rollback["previous"] == record["id"]
    assert revision(env) == "0002"  # expand-only schema stays; 1.15.1 runs on it
    assert env.stack.table_row_counts() == rows
    assert app_image_id(env) == docker_client.images.get(V1).id
    env.stack.wait_healthy("app")


def test_migrate_needs_a_verified_backup_and_prints_sql(env: DtdepEnv) -> None:
    rows = env.stack.table_row_counts()
    refused = env.cli("migrate", "--env", "prod", "--image", V2)
    assert refused.exit_code == 2
    assert "no verified backup taken after its last release" in refused.stderr
    sql = CliRunner().invoke(
        cli,
        ["--config", str(env.config_path), "migrate", "--env", "prod", "--image", V2, "--sql"],
        catch_exceptions=False,
    )
    assert sql.exit_code == 0, sql.output
    assert "CREATE TABLE role_assignment_audit" in sql.stdout
    assert "lock_timeout" in sql.stdout
    assert env.stack.table_row_counts() == rows

    backup = env.cli("backup", "create", "--env", "prod")
    assert backup.exit_code == 0, backup.output
    migrated = env.cli("migrate", "--env", "prod", "--image", V2)
    assert migrated.exit_code == 0, migrated.output
    result = json.loads(migrated.stdout)["result"]
    assert result["revision_before"] == result["revision_after"] == "0002"
    assert result["backup_id"] == json.loads(backup.stdout)["result"]["manifest"]["id"]
    with open_environment(env.ctx(), env.environment) as session:
        last = session.history.releases()[-1]
    assert last.kind == "migrate" and last.outcome == "succeeded"


def test_restore_db_on_request_drops_the_writes_since_the_backup(
    env: DtdepEnv, docker_client: Any
) -> None:
    record = deploy(env, V2)
    with open_environment(env.ctx(), env.environment) as session:
        backup = session.history.manifest(record["backup_id"])
    write_roles(env, "dtdep-dropped")
    rows_before = {f"public.{t}": n for t, n in env.stack.table_row_counts().items()}

    result = env.cli("rollback", "--env", "prod", "--restore-db", "--yes")
    assert result.exit_code == 0, result.output
    rollback = json.loads(result.stdout)["result"]
    assert rollback["restored_backup"] == backup.id
    assert "drops 1 rows" in result.stderr
    counts = {f"public.{t}": n for t, n in env.stack.table_row_counts().items()}
    assert counts == backup.row_counts
    assert app_image_id(env) == docker_client.images.get(V1).id
    env.stack.wait_healthy("app")
    assert env.stack.health()["status"] == "ok"
    # The safety backup, taken once the app served again from the replaced database, holds
    # the rows from before the rollback and is verified; the replaced database is gone.
    assert rollback["safety_backup"] is not None and rollback["kept_database"] is None
    with open_environment(env.ctx(), env.environment) as session:
        safety = session.history.manifest(rollback["safety_backup"])
        verification = session.history.verification(safety.id)
    assert safety.row_counts == rows_before
    assert safety.row_counts["public.roles"] == backup.row_counts["public.roles"] + 1
    assert verification is not None and verification.ok
    assert safety.release == record["id"]  # the data of the release rolled back
    assert not [d for d in env.stack.psql("SELECT datname FROM pg_database").split() if "__dt" in d]
    assert "safety backup (after serving)" in rollback["timings"]
    history = env.cli("history", "--env", "prod")
    data = json.loads(history.stdout)["result"]
    assert data["current"]["id"] == rollback["id"]


def test_a_failed_safety_backup_keeps_the_replaced_database(
    env: DtdepEnv, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = deploy(env, V2)
    with open_environment(env.ctx(), env.environment) as session:
        backup = session.history.manifest(record["backup_id"])
    write_roles(env, "dtdep-kept-by-rollback")
    counts = Database.row_counts

    def one_row_lost(self: Database, **kwargs: Any) -> dict[str, int]:
        # The safety backup's test restore (the only __dtverify_ one here) comes out short.
        found = counts(self, **kwargs)
        if "__dtverify_" in (kwargs.get("database") or ""):
            found["public.roles"] -= 1
        return found

    monkeypatch.setattr(Database, "row_counts", one_row_lost)
    result = env.cli("rollback", "--env", "prod", "--restore-db", "--yes")
    monkeypatch.undo()
    # The rollback succeeded: the older release serves the restored data.
    assert result.exit_code == 0, result.output
    rollback = json.loads(result.stdout)["result"]
    assert rollback["outcome"] == "succeeded"
    counts_now = {f"public.{t}": n for t, n in env.stack.table_row_counts().items()}
    assert counts_now == backup.row_counts
    assert app_image_id(env) == docker_client.images.get(V1).id
    env.stack.wait_healthy("app")
    assert env.stack.health()["status"] == "ok"
    # The data from before it is kept, named in the record and in a warning.
    kept = rollback["kept_database"]
    assert kept is not None and kept.startswith("rbac__dtsafety_")
    assert rollback["safety_backup"] is None
    assert any(
        n.startswith("warning: ") and f"kept in database {kept}" in n for n in rollback["notes"]
    )
    assert "warning: the safety backup of the replaced database failed" in result.stderr
    assert f"backup secure --env prod {kept}" in result.stderr
    with open_environment(env.ctx(), env.environment) as session:
        old = Database.of(session.target).row_counts(database=kept)
    assert old["public.roles"] == backup.row_counts["public.roles"] + 1
    listed = env.cli("backup", "list", "--env", "prod")
    assert json.loads(listed.stdout)["result"]["kept_databases"] == [kept]
    # Retried by hand: verified, then dropped.
    secured = env.cli("backup", "secure", "--env", "prod", kept)
    assert secured.exit_code == 0, secured.output
    assert json.loads(secured.stdout)["result"]["kept_database"] is None
    assert not [d for d in env.stack.psql("SELECT datname FROM pg_database").split() if "__dt" in d]
