""".github/scripts/watch_due.py: monitor.yml's scheduled watch opens production's secrets only
in the repository itself (not a fork) and within hours of production's newest approval."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.github_server import FakeGitHub

SCRIPT = Path(__file__).resolve().parents[2] / ".github" / "scripts" / "watch_due.py"


def ask(github: FakeGitHub, hours: str = "27") -> tuple[str, str]:
    env = {"GITHUB_API_URL": github.url, "GITHUB_REPOSITORY": "o/r", "GITHUB_TOKEN": "t"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), hours], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr.strip()


def approved(hours_ago: float) -> list[dict[str, str]]:
    when = datetime.now(UTC) - timedelta(hours=hours_ago)
    return [{"created_at": when.strftime("%Y-%m-%dT%H:%M:%SZ")}]


@pytest.mark.parametrize(
    "fork, deployments, due",
    [
        (False, approved(2), "due=true"),
        (False, approved(30), "due=false"),  # older than the watch: nothing to open secrets for
        (False, [], "due=false"),
        (True, approved(2), "due=false"),  # a fork has no production
    ],
    ids=["recent", "old", "never", "fork"],
)
def test_due_only_in_the_repository_within_the_window(
    fork: bool, deployments: list[dict[str, str]], due: str
) -> None:
    with FakeGitHub() as github:
        github.respond("GET", "/repos/o/r", {"full_name": "o/r", "fork": fork})
        github.respond("GET", "/repos/o/r/deployments", deployments)
        answer, why = ask(github)
        assert answer == due, why
        if not fork:
            (query,) = [r.query for r in github.requests if r.path == "/repos/o/r/deployments"]
            assert query["environment"] == ["production"]
