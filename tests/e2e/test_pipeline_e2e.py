"""The whole runbook on the local engine: `deploytools pipeline run` from a tag to production.

Staging and production are two Compose projects (dte2e<PID>-staging, -production) that start at
rbac-api 1.15.1, production with data in it. The scenarios run in order, each from the state the
one before left (one pair of stacks for all, to keep the module within its time budget):

1. a release failing smoke on staging: production never touched;
2. v1.15.2 started; a second pipeline started meanwhile is refused by the lock; the first is
   killed during validation;
3. v1.15.2 run again: it continues at the killed step and ends in production, every row kept;
4. a release passing staging but failing verification in production (it trips over production
   data): rolled back automatically, data intact;
5. a release whose migration fails on production's data: the pipeline stops, production still
   serves the release before, data intact, the report says why.

Bad releases are real tags (v1.15.3, ...) in copies of the release repository, so they go through
every step of the real pipeline. Checks are short (deploy.toml written here): the point is the
pipeline, not the check engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.pipeline_env import (
    LONG_TITLE,
    MAKE_RELEASE_REPO,
    PREFIX,
    RUN_PREFIX,
    free_port,
    seed_production,
    write_config,
)
from tests.helpers.shared_stack import alive
from tests.helpers.stacks import ComposeStack

pytestmark = pytest.mark.e2e

# -- the two environments ----------------------------------------------------------------------


@dataclass
class World:
    """Both stacks, the deploy.toml naming them, and the environment the pipeline runs with."""

    staging: Any
    production: Any
    config: Path
    env: dict[str, str]
    tmp: Path

    def pipeline(self, tag: str, repo: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
        done = subprocess.run(
            self.argv(tag, repo, *extra),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        try:
            result = json.loads(done.stdout)
        except ValueError:
            raise AssertionError(
                f"exit {done.returncode}, no JSON on stdout:\n{done.stdout}\n{done.stderr}"
            ) from None
        return done.returncode, result, done.stderr

    def argv(self, tag: str, repo: Path, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "deploytools",
            "--config",
            str(self.config),
            "--json",
            "pipeline",
            "run",
            "--tag",
            tag,
            "--repo",
            str(repo),
            *extra,
        ]

    def app_image_id(self, stack: Any) -> str:
        container = stack.container("app")
        container.reload()
        return str(container.image.id)

    def app_container_id(self, stack: Any) -> str:
        return str(stack.container("app").id)

    def version(self, stack: Any) -> str:
        return str(requests.get(f"{stack.url}/health", timeout=5).json()["version"])


def _remove_leftovers(client: Any) -> None:
    """This run's containers and volumes, and those of earlier runs whose process is gone
    (`dte2e<PID>-...`); another live run's are left alone."""
    for container in client.containers.list(all=True, filters={"name": RUN_PREFIX}):
        if _ours_or_dead(container.name):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
    for volume in client.volumes.list():
        if _ours_or_dead(volume.name):
            subprocess.run(["docker", "volume", "rm", "-f", volume.name], capture_output=True)
    # Networks too: left behind, they use up the engine's address pools after a few runs.
    for network in client.networks.list(names=[RUN_PREFIX]):
        if network.name.startswith(RUN_PREFIX) and _ours_or_dead(network.name):
            with contextlib.suppress(Exception):
                network.remove()


def _ours_or_dead(name: str) -> bool:
    found = re.match(rf"/?{RUN_PREFIX}(\d+)-", name)
    return found is not None and (name.lstrip("/").startswith(PREFIX) or not alive(int(found[1])))


@pytest.fixture(scope="module")
def world(
    docker_client: Any,
    postgres_image: str,
    release_images: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    shared = {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
        "APP_SECRET_KEY": secrets.token_urlsafe(32),
        "ADMIN_USERNAME": "admin",
        "ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "CHECK_VIEWER_USERNAME": "dte2e-viewer",
        "CHECK_VIEWER_PASSWORD": secrets.token_urlsafe(18),
    }
    first = release_images["1.15.1"]
    stacks = {}
    for name in ("staging", "production"):
        env = {
            "POSTGRES_IMAGE": postgres_image,
            "APP_IMAGE": first,
            "APP_PORT": str(free_port()),
            "POSTGRES_USER": "rbac",
            "POSTGRES_DB": "rbac",
            "POSTGRES_PASSWORD": shared["POSTGRES_PASSWORD"],
            "APP_SECRET_KEY": shared["APP_SECRET_KEY"],
        }
        stacks[name] = ComposeStack(project=f"{PREFIX}{name}", env=env, client=docker_client)
    tmp = tmp_path_factory.mktemp("dte2e")
    _remove_leftovers(docker_client)

    def bring_up(stack: Any) -> None:
        stack.down()
        stack.up()
        stack.migrate()
        stack.run_one_off(
            "python3",
            "-m",
            "rbac_api.create_admin",
            container_env={
                "ADMIN_USERNAME": shared["ADMIN_USERNAME"],
                "ADMIN_PASSWORD": shared["ADMIN_PASSWORD"],
            },
        )

    try:
        # Both at once: most of a bring-up is waiting (for PostgreSQL, for health probes).
        with ThreadPoolExecutor(max_workers=len(stacks)) as pool:
            for started in [pool.submit(bring_up, stack) for stack in stacks.values()]:
                started.result()
        seed_production(stacks["production"].url, shared)
        config = tmp / "deploy.toml"
        write_config(config, stacks["staging"], stacks["production"])
        env = {**os.environ, **shared, "POSTGRES_IMAGE": postgres_image}
        env.pop("GITHUB_ACTIONS", None)
        yield World(stacks["staging"], stacks["production"], config, env, tmp)
    finally:
        _remove_leftovers(docker_client)
        for stack in stacks.values():
            stack.down()


# -- bad releases as real tags -------------------------------------------------------------------


def bad_release(
    tmp: Path, name: str, tag: str, *, edits: dict[str, tuple[str, str]], files: dict[str, str]
) -> Path:
    """A copy of the release repository with one more release on top of v1.15.2: `edits`
    replace text in files (path -> (old, new)), `files` are added; VERSION and the release
    notes follow the tag; committed, tagged and pushed like a real release."""
    repo = tmp / name
    subprocess.run([str(MAKE_RELEASE_REPO), str(repo)], check=True, capture_output=True)
    for path, (old, new) in edits.items():
        target = repo / path
        text = target.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {path}"
        target.write_text(text.replace(old, new), encoding="utf-8")
    version = tag.removeprefix("v")
    files = {
        **files,
        "VERSION": version + "\n",
        f"RELEASE_NOTES_{tag}.md": f"# rbac-api {version}\n\n- {name}\n",
    }
    for path, text in files.items():
        (repo / path).write_text(text, encoding="utf-8")
    git = ["git", "-C", str(repo), "-c", "user.name=dte2e", "-c", "user.email=dte2e@example.com"]
    subprocess.run([*git, "add", "-A"], check=True, capture_output=True)
    subprocess.run([*git, "commit", "-q", "-m", f"Release {version}"], check=True)
    subprocess.run([*git, "tag", "-a", tag, "-m", f"rbac-api {version}"], check=True)
    push = [*git, "push", "-q", "origin", "main", "--tags"]
    subprocess.run(push, check=True, capture_output=True)
    return repo


BROKEN_LOGIN = {
    "rbac_api/app.py": ('"access_token": token,', '"token": token,'),
}
# Crashes on a title that is not ASCII: staging has none, production has one.
ASCII_ONLY = {
    "rbac_api/app.py": ('"title": row.title,', '"title": row.title.encode("ascii").decode(),'),
}
OVERFLOWING_MIGRATION = '''"""Mark every document reviewed: overflows a long title."""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
# deploytools: allow whole-table-write documents holds a few rows in every environment


def upgrade() -> None:
    op.execute("UPDATE documents SET title = title || ' (reviewed in 2026 by the access team)'")


def downgrade() -> None:
    pass
'''


# -- helpers ------------------------------------------------------------------------------------


def old_rows(stack: Any) -> dict[str, int]:
    """Row counts of 1.15.1's tables (1.15.2 adds role_assignment_audit)."""
    return {t: n for t, n in stack.table_row_counts().items() if t != "role_assignment_audit"}


def data_of(stack: Any) -> dict[str, list[str]]:
    """Production's rows that matter: users with their roles, documents, roles. (The checks add
    their own test user the first time they run; rows are only ever added.)"""
    return {
        "users": stack.psql(
            "SELECT u.username || ':' || coalesce(string_agg(r.name, ',' ORDER BY r.name), '') "
            "FROM users u LEFT JOIN user_roles ur ON ur.user_id = u.id "
            "LEFT JOIN roles r ON r.id = ur.role_id GROUP BY u.username ORDER BY 1"
        ).splitlines(),
        "documents": stack.psql(
            "SELECT id || ':' || title || ':' || body FROM documents ORDER BY id"
        ).splitlines(),
        "roles": stack.psql("SELECT name FROM roles ORDER BY 1").splitlines(),
    }


def kept(before: dict[str, list[str]], after: dict[str, list[str]]) -> bool:
    return all(set(rows) <= set(after[table]) for table, rows in before.items())


def steps_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    record = body["record"]
    return {s["name"]: s for s in record["steps"]}


def pipeline_body(result: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's data from --json output, success or failure."""
    if result.get("ok"):
        return dict(result["result"])
    return dict(result["error"]["facts"]["pipeline"])


def wait_for_line(path: Path, text: str, process: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(encoding="utf-8", errors="replace"):
            return
        if process.poll() is not None:
            raise AssertionError(f"the pipeline ended before {text!r}:\n{path.read_text()}")
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} within {timeout} s:\n{path.read_text()}")


# -- the scenarios, in order -----------------------------------------------------------------------


def test_release_failing_smoke_on_staging_never_touches_production(world: World) -> None:
    repo = bad_release(world.tmp, "broken-login", "v1.15.3", edits=BROKEN_LOGIN, files={})
    production_app = world.app_container_id(world.production)
    rows = old_rows(world.production)

    code, result, stderr = world.pipeline("v1.15.3", repo, "--yes")

    assert code == 1, stderr
    assert result["error"]["type"] == "CheckFailed"
    assert "smoke on staging" in result["error"]["message"]
    assert "production was not touched" in result["error"]["untouched"]
    steps = steps_of(pipeline_body(result))
    assert steps["deploy-staging"]["status"] == "passed"
    assert steps["smoke-staging"]["status"] == "failed"
    assert all(
        steps[name]["status"] == "pending"
        for name in ("approve-production", "backup-production", "deploy-production")
    )
    assert world.version(world.staging) == "1.15.3"
    assert world.app_container_id(world.production) == production_app
    assert world.version(world.production) == "1.15.1"
    assert old_rows(world.production) == rows
    assert "[4/11] smoke-staging: Smoke tests on staging" in stderr


def test_second_pipeline_is_refused_by_the_lock_then_the_first_is_killed(
    world: World, release_repo: Any
) -> None:
    log = world.tmp / "first.stderr"
    with log.open("w") as err:
        first = subprocess.Popen(
            world.argv("v1.15.2", release_repo.path, "--yes"),
            env=world.env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    try:
        wait_for_line(log, "[3/11] deploy-staging: Deploy", first, timeout=180)
        code, result, _ = world.pipeline("v1.15.2", release_repo.path, "--yes")
        assert code == 4
        assert result["error"]["type"] == "LockHeld"
        assert "another pipeline is running" in result["error"]["message"]
        assert f"pid {first.pid}" in result["error"]["message"]
        wait_for_line(log, "[5/11] validate-staging: Staging", first, timeout=180)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    assert world.version(world.production) == "1.15.1"


def test_killed_pipeline_resumes_and_reaches_production_keeping_every_row(
    world: World, release_repo: Any
) -> None:
    before = data_of(world.production)
    counts = old_rows(world.production)

    code, result, stderr = world.pipeline("v1.15.2", release_repo.path, "--yes")

    assert code == 0, stderr
    body = result["result"]
    assert body["resumed_from"] == "validate-staging"
    assert "continuing the pipeline of v1.15.2 at validate-staging" in stderr
    assert "[1/11] verify-release: passed earlier" in stderr
    record = body["record"]
    assert record["status"] == "succeeded"
    assert record["image"].startswith("sha256:")
    steps = steps_of(body)
    assert {n: s["status"] for n, s in steps.items()} == {
        "verify-release": "passed",
        "build-image": "passed",
        "deploy-staging": "passed",
        "smoke-staging": "passed",
        "validate-staging": "passed",
        "approve-production": "passed",
        "backup-production": "passed",
        "migrate-production": "passed",
        "deploy-production": "passed",
        "verify-production": "passed",
        "monitor-production": "skipped",
    }
    for name in ("validate-staging", "deploy-production", "verify-production"):
        assert f"[{list(steps).index(name) + 1}/11] {name}: passed in" in stderr
    # Pinned by ID everywhere: production runs exactly the image built from the tag.
    assert world.app_image_id(world.production) == record["image"]
    assert world.app_image_id(world.staging) == record["image"]
    assert world.version(world.production) == "1.15.2"
    after = data_of(world.production)
    assert kept(before, after), (before, after)
    assert after["documents"] == before["documents"]
    assert all(old_rows(world.production)[t] >= n for t, n in counts.items())
    assert world.production.psql("SELECT version_num FROM alembic_version") == "0002"
    assert body["report"]["environment"] == "production"
    assert body["report"]["outcome"] == "succeeded"

    # Again: the release serves already; the pipeline says so and deploys nothing.
    app = world.app_container_id(world.production)
    code, again, stderr = world.pipeline("v1.15.2", release_repo.path, "--yes")
    assert code == 0, stderr
    assert again["result"]["already_done"] is True
    assert "nothing to do" in stderr
    assert world.app_container_id(world.production) == app


def test_release_failing_verification_in_production_is_rolled_back(world: World) -> None:
    repo = bad_release(world.tmp, "ascii-only", "v1.15.3", edits=ASCII_ONLY, files={})
    before_image = world.app_image_id(world.production)
    rows = world.production.table_row_counts()

    code, result, stderr = world.pipeline("v1.15.3", repo, "--yes")

    assert code == 1, stderr
    error = result["error"]
    assert "verify on production" in error["message"], stderr
    assert "documents listed" in error["message"]
    assert "rolled back automatically" in error["untouched"]
    body = pipeline_body(result)
    assert body["record"]["status"] == "rolled-back"
    steps = steps_of(body)
    assert steps["smoke-staging"]["status"] == "passed"
    assert steps["validate-staging"]["status"] == "passed"
    assert steps["deploy-production"]["status"] == "passed"
    assert steps["verify-production"]["status"] == "failed"
    assert steps["rollback-production"]["status"] == "passed"
    world.production.wait_healthy("app")
    assert world.app_image_id(world.production) == before_image
    assert world.version(world.production) == "1.15.2"
    assert world.production.table_row_counts() == rows
    assert body["report"]["status"] == "rolled back"


def test_release_whose_migration_fails_in_production_leaves_it_serving(world: World) -> None:
    repo = bad_release(
        world.tmp,
        "overflowing-migration",
        "v1.15.4",
        edits={},
        files={"migrations/versions/0003_mark_reviewed.py": OVERFLOWING_MIGRATION},
    )
    app = world.app_container_id(world.production)
    rows = world.production.table_row_counts()

    code, result, stderr = world.pipeline("v1.15.4", repo, "--yes")

    assert code == 3, stderr
    error = result["error"]
    assert "migration" in error["message"]
    assert "value too long" in error["message"]
    assert "revision 0002" in error["untouched"]
    body = pipeline_body(result)
    steps = steps_of(body)
    assert steps["validate-staging"]["status"] == "passed"  # staging's data fits
    assert steps["backup-production"]["status"] == "passed"
    assert steps["migrate-production"]["status"] == "failed"
    assert steps["deploy-production"]["status"] == "pending"
    assert body["record"]["status"] == "failed"
    # Production: the same container, the same release, the same rows, the same revision.
    assert world.app_container_id(world.production) == app
    assert world.version(world.production) == "1.15.2"
    assert world.production.table_row_counts() == rows
    assert world.production.psql("SELECT version_num FROM alembic_version") == "0002"
    titles = world.production.psql("SELECT title FROM documents ORDER BY id").splitlines()
    assert LONG_TITLE in titles
    # The report says why: the migration's own failure, in the record the report is about.
    report = body["report"]
    assert report["kind"] == "migrate"
    assert report["outcome"] == "failed"
    assert "value too long" in json.dumps(report)
