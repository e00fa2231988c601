"""Deploy windows on the real engine: a deploy outside its window changes nothing (same app
container, no release record, no backup, no lock); with --outside-window it deploys and the
reason is in the release record and the report; rollback is never blocked. Docker prefix dtrest-."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from conftest import ComposeStack
from dtdep_env import stack_env, write_config

from deploytools.cli import cli
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.steps.backup import open_environment

if TYPE_CHECKING:
    from conftest import ReleaseImages

pytestmark = pytest.mark.integration

V1, V2 = "rbac-api-test:1.15.1", "rbac-api-test:1.15.2"


def _window_excluding_now() -> str:
    """A one-hour daily window three hours from now: this test never runs inside it."""
    start = datetime.now(UTC) + timedelta(hours=3)
    return f'\n[windows.prod]\nallow = ["* {start:%H}:00-{start + timedelta(hours=1):%H}:00"]\n'


@pytest.fixture(scope="module")
def stack(
    docker_client: Any,
    postgres_image: str,
    release_images: ReleaseImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ComposeStack, Path, str]]:
    release_images["1.15.2"]
    project = f"dtrest-win-{os.getpid()}"
    store = f"{project}-store"
    env = stack_env(postgres_image, release_images["1.15.1"])
    stack = ComposeStack(project=project, env=env, client=docker_client)
    try:
        stack.up()
        stack.migrate()
        path = tmp_path_factory.mktemp("dtrest-win") / "deploy.toml"
        write_config(path, {"prod": stack}, store=f"volume:{store}")
        path.write_text(path.read_text() + _window_excluding_now())
        yield stack, path, store
    finally:
        stack.down()
        with contextlib.suppress(Exception):
            docker_client.volumes.get(store).remove(force=True)
        for image in docker_client.images.list(name="rbac-api-test"):
            for tag in image.tags:
                if ":prod-release-" in tag:
                    with contextlib.suppress(Exception):
                        docker_client.api.remove_image(tag)


def deploytools(path: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(path), "--json", *args])


def stored(path: Path) -> tuple[list[Any], list[Any], Any]:
    ctx = StepContext(config=load_config(path), progress=lambda _m: None)
    with open_environment(ctx, "prod") as session:
        h = session.history
        return h.releases(), h.manifests(), h.lock()


def test_outside_the_window_nothing_changes_then_a_reason_lets_it_through(
    stack: tuple[ComposeStack, Path, str],
) -> None:
    compose, path, _ = stack
    app_before = compose.container("app")
    revision_before = compose.psql("SELECT version_num FROM alembic_version")

    refused = deploytools(path, "deploy", "--env", "prod", "--image", V2)
    assert refused.exit_code == 2, refused.output
    error = json.loads(refused.stdout)["error"]
    assert error["type"] == "OutsideWindow"
    assert "next allowed" in error["message"]
    app_after = compose.container("app")
    assert app_after.id == app_before.id
    assert app_after.attrs["Config"]["Image"] == V1
    assert compose.psql("SELECT version_num FROM alembic_version") == revision_before
    assert stored(path) == ([], [], None)  # no record, no backup, no lock

    refused_migration = deploytools(path, "migrate", "--env", "prod", "--image", V2)
    assert refused_migration.exit_code == 2, refused_migration.output
    assert compose.psql("SELECT version_num FROM alembic_version") == revision_before

    allowed = deploytools(
        path, "deploy", "--env", "prod", "--image", V2, "--outside-window", "CVE-2026-0001 fix"
    )
    assert allowed.exit_code == 0, allowed.output
    record = json.loads(allowed.stdout)["result"]["record"]
    assert record["outcome"] == "succeeded"
    assert "CVE-2026-0001 fix" in record["outside_window"]
    assert compose.container("app").attrs["Config"]["Image"] == V2
    releases, _, _ = stored(path)
    assert releases[-1].outside_window == record["outside_window"]

    report = deploytools(path, "report", "--env", "prod", "--format", "json")
    assert report.exit_code == 0, report.output
    assert "outside the deploy windows" in report.stdout
    assert "CVE-2026-0001 fix" in report.stdout


def test_rollback_is_never_blocked_by_a_window(stack: tuple[ComposeStack, Path, str]) -> None:
    compose, path, _ = stack
    back = deploytools(path, "rollback", "--env", "prod", "--yes")
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["result"]["outcome"] == "succeeded"
    assert compose.container("app").attrs["Config"]["Image"] == V1


def test_incident_report_after_the_rollback_on_the_real_engine(
    stack: tuple[ComposeStack, Path, str], tmp_path: Path
) -> None:
    _, path, _ = stack
    summary = tmp_path / "summary.md"
    result = CliRunner().invoke(
        cli,
        ["--config", str(path), "report", "--incident", "--env", "prod"],
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert result.exit_code == 0, result.output
    markdown = result.stdout
    assert markdown.startswith("# Incident report: rbac-api prod, release 0001")
    assert f"- **Image**: `{V2}` → `{V1}`" in markdown
    assert "- **Writes dropped**: none: no restore, every write was kept" in markdown
    assert "outside the deploy windows: " in markdown  # the timeline has the recorded reason
    # No log lines were stored: the app container's logs were fetched from the engine.
    assert "Source: fetched now from " in markdown
    logs = markdown.split("## Logs around the failure", 1)[1].split("## Escalation", 1)[0]
    assert logs.count("\n") > 5
    assert summary.read_text() == markdown + "\n"
    as_json = deploytools(path, "report", "--incident", "--env", "prod")
    assert json.loads(as_json.stdout)["result"]["rolled_back"]["record_id"] == "0002"
