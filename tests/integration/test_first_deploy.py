"""The very first command on a brand-new environment is a deploy: no container, no volume, no
database yet. The deploy starts the database, takes (and verifies) a backup of the still-empty
database, migrates it, starts the app and records the release.

A stack of its own (Compose project dtfirst-PID, free ports, store volume dtfirst-PID-store),
taken down with its volumes at the end, failures included.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.context import StepContext
from deploytools.session import open_environment
from tests.helpers.shared_stack import IMAGE_REPOSITORY, stack_env, write_config
from tests.helpers.stacks import ComposeStack, ReleaseImages, remove_project_leftovers

pytestmark = pytest.mark.integration

#: An environment name of this module's own: the keep tag it makes is dtfirst's alone.
ENV = "first"


@pytest.fixture
def fresh_stack(docker_client: Any, postgres_image: str) -> Iterator[ComposeStack]:
    project = f"dtfirst-{os.getpid()}"
    stack = ComposeStack(
        project=project, env=stack_env(postgres_image, "unused"), client=docker_client
    )
    stack.down()  # a leftover of a run of this pid that was killed
    try:
        yield stack
    finally:
        stack.down()
        remove_project_leftovers(docker_client, project, (f"{project}-", f"{project}_"))
        for image in docker_client.images.list(name=IMAGE_REPOSITORY):
            for tag in image.tags:
                if tag.startswith(f"{IMAGE_REPOSITORY}:{ENV}-release-"):
                    with contextlib.suppress(Exception):
                        docker_client.images.remove(tag)


def test_the_first_command_on_an_empty_environment_is_a_deploy(
    fresh_stack: ComposeStack,
    release_images: ReleaseImages,
    docker_client: Any,
    tmp_path: Path,
) -> None:
    stack = fresh_stack
    image = release_images["1.15.1"]
    store = f"{stack.project}-store"
    config = write_config(tmp_path / "deploy.toml", {ENV: stack}, store=f"volume:{store}")
    assert not docker_client.containers.list(all=True, filters={"name": stack.project})

    result = CliRunner().invoke(
        cli,
        ["--config", str(config.path), "--json", "deploy", "--env", ENV, "--image", image],
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["result"]["record"]
    assert record["outcome"] == "succeeded"
    assert record["previous"] is None and record["previous_image"] is None
    assert record["revision_before"] is None and record["revision_after"]
    assert record["backup_id"]
    # The app serves, through the stack's published port.
    assert requests.get(f"{stack.url}/health", timeout=5).status_code == 200
    with open_environment(StepContext(config=config), ENV, read_only=True) as session:
        releases = session.history.releases()
        manifest = session.history.manifest(record["backup_id"])
        verification = session.history.verification(record["backup_id"])
    assert [r.id for r in releases] == [record["id"]]
    assert releases[0].outcome == "succeeded"
    # The backup is of the empty database as it was before the first migration, and verified.
    assert manifest.reason == "pre-deploy"
    assert manifest.revision is None and manifest.total_rows == 0
    assert verification is not None and verification.ok
