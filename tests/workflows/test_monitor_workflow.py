"""(g) monitor.yml on its schedule: bounded and fork-safe.

The job `due` asks the GitHub API fake, without any secret, whether there is anything to
watch; when not (production's newest approval is older than the watch, or the repository is a
fork), the watching job never starts, so production's secrets are never opened, and the run
ends green.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.session import open_environment
from deploytools.store.records import ReleaseRecord
from tests.fakes.github_server import FakeGitHub
from tests.workflows.conftest import PREFIX, REPOSITORY, Act

pytestmark = pytest.mark.workflows


def _schedule(tmp_path: Path) -> Path:
    payload = tmp_path / "schedule.json"
    payload.write_text(json.dumps({"schedule": "*/30 * * * *"}))
    return payload


@pytest.mark.parametrize(
    "fork, approved_h_ago",
    [(False, 30.0), (True, 1.0)],
    ids=["release-older-than-the-watch", "fork"],
)
def test_nothing_to_watch_ends_green_without_opening_productions_secrets(
    act: Act, tmp_path: Path, fork: bool, approved_h_ago: float
) -> None:
    approved = datetime.now(UTC) - timedelta(hours=approved_h_ago)
    with FakeGitHub() as github:
        root = f"/repos/{REPOSITORY}"
        github.respond("GET", root, {"full_name": REPOSITORY, "fork": fork})
        github.respond(
            "GET", f"{root}/deployments", [{"created_at": approved.strftime("%Y-%m-%dT%H:%M:%SZ")}]
        )
        run = act.run(
            "schedule",
            "monitor.yml",
            payload=_schedule(tmp_path),
            github_api=github.url,
            secrets={"SSH_PRIVATE_KEY": "dtwf-must-not-be-read-by-any-step"},
        )
        asked = github.paths()
    assert run.returncode == 0, run.log[-4000:]
    # `due` ran and said no; the watching job (production's secrets) and notify never started.
    assert run.jobs() == {"anything to watch": "succeeded"}, run.log[-4000:]
    assert "due=false" in run.log
    assert f"{root}" in asked
    if fork:
        assert "is a fork" in run.log
        assert f"{root}/deployments" not in asked
    else:
        assert "h old (> 27 h)" in run.log


def test_a_serving_release_older_than_the_watch_is_not_watched(act: Act, tmp_path: Path) -> None:
    """GitHub says due (an approval 2 h ago, say a rejected rollback), so the watching job
    starts; production's own records say its serving release finished 25 h ago: `monitor
    --only-after-release 24h` watches nothing and the run ends green, no notice sent.

    The production here is this test's own (its Compose project and records, on a branch of
    the repository whose deploy.toml names them): the session's production, which other
    modules deploy and roll back, is neither read nor changed."""
    own = f"{PREFIX}-monitor"

    def own_production(text: str) -> str:
        return text.replace(f'"{PREFIX}-production"', f'"{own}-production"').replace(
            f'"volume:{PREFIX}-backups"', f'"volume:{own}-backups"'
        )

    work = act.git_server.clone_with_config(tmp_path / "work", "dtwf-monitor", own_production)
    config = load_config(work / "deploy.toml")
    assert config.environment("production").compose_project == f"{own}-production"
    finished = datetime.now(UTC) - timedelta(hours=25)
    with open_environment(StepContext(config), "production") as session:
        session.history.save_release(
            ReleaseRecord(
                id="0001",
                environment="production",
                kind="deploy",
                who="dtwf",
                started=(finished - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                image="127.0.0.1:5000/rbac-api@sha256:" + "1" * 64,
                outcome="succeeded",
                finished=finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        )
    approved = datetime.now(UTC) - timedelta(hours=2)
    with FakeGitHub() as github:
        root = f"/repos/{REPOSITORY}"
        github.respond("GET", root, {"full_name": REPOSITORY, "fork": False})
        github.respond(
            "GET", f"{root}/deployments", [{"created_at": approved.strftime("%Y-%m-%dT%H:%M:%SZ")}]
        )
        run = act.run(
            "schedule", "monitor.yml", payload=_schedule(tmp_path), github_api=github.url,
            workdir=work,
        )  # fmt: skip
    assert run.returncode == 0, run.log[-4000:]
    assert "due=true" in run.log
    assert run.jobs() == {"anything to watch": "succeeded", "monitor": "succeeded"}, run.log[-4000:]
    assert "release 0001 finished 25.0 h ago" in run.log, run.log[-4000:]
