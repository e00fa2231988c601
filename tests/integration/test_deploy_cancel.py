"""A recreate deploy cancelled while its app is stopped, as GitHub cancels a job: SIGINT to the
deploytools process, SIGTERM 7.5 s later, SIGKILL 2.5 s after that (see
tests/workflows/test_tag_to_production.py's `cancel_during`). Production must be left serving one
whole release, the lock released and the record saying what happened.

The release deployed has a slow migration (it creates a table, then sleeps in the same
transaction), which holds the deploy in its "migrate" phase with the old app stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from deploytools.session import open_environment
from tests.helpers.shared_stack import DtdepEnv, ImageVariants, module_env, records

pytestmark = pytest.mark.integration

V1, V2 = "rbac-api-test:1.15.1", "rbac-api-test:1.15.2"

env = module_env("dtcx")

SLOW_MIGRATION = '''"""Holds the migration: creates a table, then sleeps, in one transaction."""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("dtcx_half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("SELECT pg_sleep(45)")


def downgrade() -> None:
    op.drop_table("dtcx_half_done")
'''

SLEEPING = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE query LIKE '%pg_sleep(45)%' AND pid <> pg_backend_pid()"
)


def github_cancel(process: subprocess.Popen[str]) -> int:
    """SIGINT, SIGTERM 7.5 s later if it still runs, SIGKILL 2.5 s after that; its exit code."""
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        code = process.wait(timeout=7.5)
        print(f"exited {time.monotonic() - sent:.1f} s after SIGINT")  # a figure, for -rP
        return code
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=2.5)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=30)


def wait_until(what: str, predicate: Any, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 180
    while not predicate():
        assert process.poll() is None, f"the deploy ended before {what}"
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.3)


def serves(env: DtdepEnv) -> dict[str, Any]:
    """/health through the stack's proxy, once it answers (the proxy re-checks its backend)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            answer = requests.get(f"{env.stack.url}/health", timeout=2)
            if answer.status_code == 200:
                return dict(answer.json())
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "nothing serves /health"
        time.sleep(0.3)


def one_off_app_containers(env: DtdepEnv) -> list[Any]:
    return list(
        env.stack.client.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={env.stack.project}",
                    "com.docker.compose.service=app",
                    "com.docker.compose.oneoff=True",
                ]
            },
        )
    )


def ended(env: DtdepEnv, phase: str) -> bool:
    """The deploy's record says its `phase` ended (while it is still in progress)."""
    found = records(env)
    last = found[-1] if found else None
    return last is not None and last.outcome == "in-progress" and phase in last.timings


@pytest.mark.parametrize("when", ["just after the stop", "during the migration"])
def test_a_cancel_before_the_migration_commits_starts_the_same_old_containers_on_untouched_data(
    env: DtdepEnv, image_variants: ImageVariants, when: str
) -> None:
    slow = image_variants.build(
        V2,
        "rbac-api-test:dtcx-slow-migration",
        dockerfile="COPY 0003_slow.py /app/migrations/versions/0003_slow.py\n",
        files={"0003_slow.py": SLOW_MIGRATION},
    )
    revision = env.stack.psql("SELECT version_num FROM alembic_version")
    rows = env.stack.table_row_counts()
    old = env.stack.container("app")
    version = serves(env)["version"]
    argv = [sys.executable, "-m", "deploytools", "--config", str(env.config_path), "--json"]
    process = subprocess.Popen(
        [*argv, "deploy", "--env", "prod", "--image", slow, "--strategy", "recreate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        if when == "just after the stop":
            wait_until("the stop", lambda: ended(env, "stop"), process)
        else:
            wait_until("the slow migration", lambda: env.stack.psql(SLEEPING) != "0", process)
        code = github_cancel(process)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    # The very same container serves again: the release before, healthy.
    old.reload()
    assert (old.status, env.stack.container("app").id) == ("running", old.id), (code, err)
    assert serves(env)["version"] == version
    # It ended by itself, within the grace, saying it was cancelled and what serves.
    assert code == 130, (code, out, err)
    error = json.loads(out)["error"]
    assert error["type"] == "DeployCancelled", error
    assert "cancelled" in error["message"], error
    assert "serves again" in error["untouched"], error
    # The data is untouched: the migration's transaction was rolled back, nothing holds it.
    assert env.stack.psql("SELECT version_num FROM alembic_version") == revision
    assert env.stack.psql("SELECT to_regclass('public.dtcx_half_done') IS NULL") == "t"
    assert env.stack.psql(SLEEPING) == "0"
    assert env.stack.table_row_counts() == rows
    assert [c.name for c in one_off_app_containers(env) if c.status == "running"] == []
    # The record says it was cancelled and what serves; the lock is gone.
    last = records(env)[-1]
    assert (last.image, last.outcome) == (slow, "interrupted")
    assert "cancelled" in (last.error or "")
    assert any("serves again" in note for note in last.notes), last.notes
    print(f"recovered in {last.timings['cancel']} s (the record's cancel timing)")
    with open_environment(env.ctx(), env.environment) as session:
        assert session.history.lock() is None


def test_a_cancel_once_the_migration_committed_finishes_starting_the_new_release(
    env: DtdepEnv, image_variants: ImageVariants
) -> None:
    # 1.15.2 (its migration commits at once) whose app takes a few seconds to start listening:
    # the deploy is held in its "healthy" phase, on the new schema, with nothing serving.
    slow_start = image_variants.build(
        V2,
        "rbac-api-test:dtcx-slow-start",
        dockerfile='CMD ["sh", "-c", "sleep 3; exec gunicorn --config /app/gunicorn.conf.py '
        'rbac_api.wsgi:app"]\n',
        files={},
    )
    before = env.stack.psql("SELECT version_num FROM alembic_version")
    argv = [sys.executable, "-m", "deploytools", "--config", str(env.config_path), "--json"]
    process = subprocess.Popen(
        [*argv, "deploy", "--env", "prod", "--image", slow_start, "--strategy", "recreate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        wait_until("the start", lambda: ended(env, "start"), process)
        code = github_cancel(process)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 130, (code, out, err)
    error = json.loads(out)["error"]
    assert error["type"] == "DeployCancelled", error
    assert "started to the end and serves" in error["untouched"], error
    # The new release serves, on the schema its migration committed.
    revision = env.stack.psql("SELECT version_num FROM alembic_version")
    assert revision != before
    assert serves(env)["version"] == "1.15.2"
    app = env.stack.container("app")
    assert app.image.id == env.stack.client.images.get(slow_start).id
    # It is the current release: its record succeeded, and says it was cancelled.
    last = records(env)[-1]
    assert (last.image, last.outcome, last.revision_after) == (slow_start, "succeeded", revision)
    assert "cancelled" in (last.error or "")
    print(f"recovered in {last.timings['cancel']} s (the record's cancel timing)")
    with open_environment(env.ctx(), env.environment) as session:
        assert session.history.lock() is None
        assert session.history.current_release().id == last.id  # type: ignore[union-attr]
