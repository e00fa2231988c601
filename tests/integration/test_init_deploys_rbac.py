"""`deploytools init` on a copy of rbac-api's Compose project (examples/rbac-api with
docker-compose.prod.yml, whose own proxy service publishes the port): the deploy.toml it
writes passes `config check` and, with the secrets exported and staging's port filled in,
deploys the project into an empty environment, whose smoke checks (init's health probe) pass.
(notes-api's counterpart is in test_notes_service.py, with the images built there.)

Compose project dtn3-init-rbac-PID-staging on a port of 19300-19399, store volume
dtn3-init-rbac-PID-backups; removed at the end, failures included.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.config import load_config
from tests.helpers.notes_env import free_port
from tests.helpers.stacks import REPO_ROOT, ComposeStack, ReleaseImages, remove_project_leftovers

pytestmark = pytest.mark.integration


def _remove(client: Any, root: Path, project: str, env: dict[str, str]) -> None:
    subprocess.run(
        [*ComposeStack(project=project, env={}, client=client).compose, "-f",
         str(root / "docker-compose.prod.yml"), "-p", project, "down", "-v", "--timeout", "5"],
        env={**os.environ, **env},
        capture_output=True,
        check=False,
    )  # fmt: skip
    remove_project_leftovers(client, project, (f"{project}_", f"{root.name}-backups"))


def test_init_on_a_copy_of_the_rbac_project_writes_a_config_that_deploys_it(
    docker_client: Any, postgres_image: str, release_images: ReleaseImages, tmp_path: Path
) -> None:
    root = tmp_path / f"dtn3-init-rbac-{os.getpid()}"
    shutil.copytree(REPO_ROOT / "examples" / "rbac-api", root)
    compose = root / "docker-compose.prod.yml"
    # This machine's PostgreSQL image (a default of the Compose file, as a team would set it).
    compose.write_text(
        (REPO_ROOT / "docker-compose.prod.yml")
        .read_text()
        .replace("${POSTGRES_IMAGE:-postgres:16}", f"${{POSTGRES_IMAGE:-{postgres_image}}}")
    )
    done = CliRunner().invoke(cli, ["--json", "init", "--dir", str(root), "--no-workflows"])
    assert done.exit_code == 0, done.output
    to_fill = " ".join(json.loads(done.stdout)["result"]["to_fill"])
    assert "POSTGRES_PASSWORD" in to_fill and "APP_SECRET_KEY" in to_fill
    written = root / "deploy.toml"
    checked = CliRunner().invoke(cli, ["--config", str(written), "config", "check"])
    assert checked.exit_code == 0, checked.output
    # What init lists for a person to fill in: where staging publishes (a free port here).
    port = free_port()
    text = written.read_text()
    assert text.count("8180") == 2, text  # staging's base_url and APP_PORT
    written.write_text(text.replace("8180", str(port)))
    project = load_config(written).environments["staging"].compose_project
    env = {"POSTGRES_PASSWORD": secrets.token_hex(12), "APP_SECRET_KEY": secrets.token_hex(24)}
    image = release_images["1.15.1"]
    _remove(docker_client, root, project, env)
    try:
        deployed = CliRunner().invoke(
            cli,
            ["--config", str(written), "--json", "deploy", "--env", "staging", "--image", image],
            env=env,
            catch_exceptions=False,
        )
        assert deployed.exit_code == 0, deployed.output
        record = json.loads(deployed.stdout)["result"]["record"]
        assert record["outcome"] == "succeeded" and record["version"] == "1.15.1"
        # Nothing served there: the release was started, nothing switched or stopped.
        assert record["strategy"] == "recreate"
        assert record["strategy_reason"].startswith("nothing serves there yet")
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        smoke = CliRunner().invoke(
            cli,
            ["--config", str(written), "--json", "smoke", "--env", "staging"],
            env=env,
            catch_exceptions=False,
        )
        assert smoke.exit_code == 0, smoke.output
        verdicts = {c["name"]: c["verdict"] for c in json.loads(smoke.stdout)["result"]["results"]}
        assert verdicts and set(verdicts.values()) == {"pass"}, verdicts
        assert any(name.startswith("health") for name in verdicts), verdicts
    finally:
        _remove(docker_client, root, project, env)
        repository = load_config(written).project.image_repository
        for found in docker_client.images.list(name=repository):
            for tag in found.tags:
                if tag.startswith(f"{repository}:staging-release-"):
                    with contextlib.suppress(Exception):
                        docker_client.images.remove(tag)
