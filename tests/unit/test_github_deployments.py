"""GitHub deployments and their statuses, against a local server with GitHub's REST shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytools.config import load_config
from deploytools.errors import EnvironmentUnreachable, UsageError
from deploytools.github_deployments import GitHubDeployments, run_url
from tests.fakes.github_deployments import FakeDeploymentsApi
from tests.fakes.github_server import FakeGitHub

REPO = "example/rbac-api"
RUN = "https://github.com/example/rbac-api/actions/runs/42/attempts/1"
SERVICE = "https://rbac.example.com"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def shared_client(server: FakeGitHub) -> GitHubDeployments:
    # Made once: building a ghapi client reads its whole API description (about a second).
    return GitHubDeployments(REPO, "ghs_test-token", gh_host=server.url)


@pytest.fixture
def github(server: FakeGitHub) -> FakeGitHub:
    """The shared server, emptied: no answers, no handlers, no requests."""
    server.answers.clear()
    server.handlers.clear()
    server.requests.clear()
    return server


@pytest.fixture
def api(github: FakeGitHub) -> FakeDeploymentsApi:
    return FakeDeploymentsApi.install(github, REPO)


@pytest.fixture
def client(github: FakeGitHub, shared_client: GitHubDeployments) -> GitHubDeployments:
    return shared_client


def start(client: GitHubDeployments, environment: str = "production"):  # type: ignore[no-untyped-def]
    return client.start(
        environment, ref="v1.15.2", release="1.15.2", log_url=RUN, environment_url=SERVICE
    )


def test_start_creates_one_deployment_in_progress_with_the_links(
    github: FakeGitHub, api: FakeDeploymentsApi, client: GitHubDeployments
) -> None:
    deployment = start(client)
    created = api.deployments[deployment.id]
    assert created["ref"] == "v1.15.2" and created["environment"] == "production"
    assert created["production_environment"] is True
    assert created["payload"] == {"release": "1.15.2", "tool": "deploytools"}
    (status,) = api.statuses[deployment.id]
    assert status["state"] == "in_progress"
    assert status["log_url"] == RUN and status["environment_url"] == SERVICE
    post = next(
        r for r in github.requests if r.method == "POST" and r.path.endswith("/deployments")
    )
    assert post.headers["authorization"] == "token ghs_test-token"
    assert json.loads(post.body)["required_contexts"] == []
    assert json.loads(post.body)["auto_merge"] is False


@pytest.mark.parametrize("final", ["success", "failure", "inactive"])
def test_finish_sets_the_last_status(
    api: FakeDeploymentsApi, client: GitHubDeployments, final: str
) -> None:
    deployment = start(client)
    client.finish(deployment, final, description="verified")
    states = [s["state"] for s in api.statuses[deployment.id]]
    assert states == ["in_progress", final]
    last = api.statuses[deployment.id][-1]
    assert last["log_url"] == RUN and last["description"] == "verified"


def test_a_rerun_reuses_the_deployment_of_its_environment_and_ref(
    api: FakeDeploymentsApi, client: GitHubDeployments
) -> None:
    first = start(client)
    client.finish(first, "failure")
    again = start(client)
    assert again.id == first.id
    assert len(api.deployments) == 1
    assert [s["state"] for s in api.statuses[first.id]] == ["in_progress", "failure", "in_progress"]


def test_one_deployment_per_environment(api: FakeDeploymentsApi, client: GitHubDeployments) -> None:
    staging = start(client, "staging")
    production = start(client, "production")
    assert staging.id != production.id
    assert api.deployments[staging.id]["production_environment"] is False
    assert {d["environment"] for d in api.deployments.values()} == {"staging", "production"}


def test_a_github_error_says_what_the_token_needs(
    github: FakeGitHub, client: GitHubDeployments
) -> None:
    github.respond("GET", f"/repos/{REPO}/deployments", [])
    github.respond(
        "POST",
        f"/repos/{REPO}/deployments",
        {"message": "Resource not accessible by integration"},
        status=403,
    )
    with pytest.raises(EnvironmentUnreachable) as caught:
        start(client)
    assert "403" in caught.value.message
    assert "Resource not accessible by integration" in caught.value.message
    assert "deployments: write" in (caught.value.hint or "")


def test_unknown_states_are_refused_before_anything_is_sent(
    github: FakeGitHub, api: FakeDeploymentsApi, client: GitHubDeployments
) -> None:
    deployment = start(client)
    sent = len(github.requests)
    with pytest.raises(UsageError):
        client.finish(deployment, "in_progress")
    with pytest.raises(UsageError):
        client.set_status(deployment, "done")
    assert len(github.requests) == sent


def test_from_config_needs_a_token() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "deploy.toml")
    assert GitHubDeployments.from_config(config, {}) is None
    client = GitHubDeployments.from_config(config, {"GITHUB_TOKEN": "t"})
    assert client is not None and client.repository == config.github.repository


def test_run_url() -> None:
    environ = {
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_ATTEMPT": "1",
    }
    assert run_url(environ) == RUN
    assert run_url({}) == ""
