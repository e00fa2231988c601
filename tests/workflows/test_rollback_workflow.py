"""(f) rollback.yml dispatched: production goes back to the named release, the team is told
with the incident report, and what serves is that release.

Production is a real Compose stack of this session (dtwf<hex>-production) on the local engine,
deployed twice with deploytools (1.15.1, then 1.15.2); the workflow runs through act with the
stand-ins, the webhook fake as Slack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from deploytools.config import load_config
from tests.fakes.github_server import FakeGitHub
from tests.fakes.webhook_server import FakeWebhooks
from tests.workflows.conftest import Act, ServiceImages

pytestmark = pytest.mark.workflows

SECRETS = {
    "POSTGRES_PASSWORD": "dtwf-postgres-password-1234",
    "APP_SECRET_KEY": "dtwf-app-secret-key-0123456789abcdef",
}


def deploytools(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploytools", "--config", str(config), *argv],
        env={**os.environ, **SECRETS},
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def production(act: Act, service_image: ServiceImages) -> dict[str, str]:
    """Production serving 1.15.2, with 1.15.1 before it: {version: image}."""
    config = act.git_server.work / "deploy.toml"
    images = {}
    for version in ("1.15.1", "1.15.2"):
        image = service_image(version)
        done = deploytools(
            config, "deploy", "--env", "production", "--image", image, "--no-backup-check", "--yes"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        images[version] = image
    return images


def test_rollback_dispatched_goes_to_the_named_release_and_tells_the_team(
    act: Act, github: FakeGitHub, production: dict[str, str], tmp_path: Path
) -> None:
    payload = tmp_path / "dispatch.json"
    inputs = {"environment": "production", "version": "1.15.1", "restore-db": False}
    payload.write_text(json.dumps({"inputs": inputs, "ref": "refs/heads/main"}))
    artifacts = tmp_path / "artifacts"
    with FakeWebhooks() as hooks:
        run = act.run(
            "workflow_dispatch",
            "rollback.yml",
            payload=payload,
            github_api=github.url,
            secrets={**SECRETS, "SLACK_WEBHOOK_URL": f"{hooks.url}/slack"},
            artifacts=artifacts,
            timeout_s=600,
        )
        received = list(hooks.received)
    assert run.returncode == 0, run.log[-6000:]
    assert run.jobs() == {"approve": "succeeded", "rollback": "succeeded", "notify": "succeeded"}
    # What serves: 1.15.1, by its image, and its records say so.
    config = load_config(act.git_server.work / "deploy.toml")
    url = config.environment("production").base_url
    assert requests.get(f"{url}/health", timeout=10).json()["version"] == "1.15.1"
    history = json.loads(
        deploytools(
            act.git_server.work / "deploy.toml", "--json", "history", "--env", "production"
        ).stdout
    )["result"]
    assert history["current"]["kind"] == "rollback"
    assert history["current"]["version"] == "1.15.1"
    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", production["1.15.1"]],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert history["current"]["image_id"] == image_id
    assert [r["kind"] for r in history["releases"]][:3] == ["rollback", "deploy", "deploy"]
    # The team: one rollback notice naming the release, with the incident report.
    (notice,) = [r for r in received if r.path == "/slack"]
    text = json.dumps(notice.json)
    assert "rolled back to 1.15.1" in text
    assert (artifacts / "incident-report" / "incident-report.md").read_text().strip()
