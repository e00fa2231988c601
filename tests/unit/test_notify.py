"""`deploytools notify` against webhook receivers on 127.0.0.1 that record what they get."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.errors import EnvironmentUnreachable, ExitCode, UsageError
from deploytools.github_deployments import GitHubDeployments
from deploytools.steps import notify
from tests.fakes.github_deployments import FakeDeploymentsApi
from tests.fakes.github_server import FakeGitHub
from tests.fakes.webhook_server import FakeWebhooks

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "deploy.toml"


@pytest.fixture
def hooks() -> Iterator[FakeWebhooks]:
    with FakeWebhooks() as server:
        yield server


@pytest.fixture
def ctx() -> StepContext:
    return StepContext(config=load_config(CONFIG))


def urls(hooks: FakeWebhooks, *, status_page: bool = True) -> dict[str, str]:
    env = {"SLACK_WEBHOOK_URL": hooks.url + "/slack/T000/B000/secret-token"}
    if status_page:
        env["STATUS_PAGE_HOOK_URL"] = hooks.url + "/status"
    return env


@pytest.mark.parametrize("event", notify.EVENTS)
def test_each_event_reaches_slack_and_the_status_page(
    ctx: StepContext, hooks: FakeWebhooks, event: str
) -> None:
    result = notify.run(
        ctx,
        event=event,
        environment="production",
        release="v1.15.2",
        link="https://github.com/example/rbac-api/actions/runs/7",
        environ=urls(hooks),
    )
    assert result.ok and result.skipped == ("github-deployment",)  # no token
    slack, status = hooks.received
    assert slack.path == "/slack/T000/B000/secret-token"
    assert slack.headers["content-type"] == "application/json"
    text = slack.json["text"]
    assert "rbac-api" in text and "v1.15.2 on production" in text
    assert "<https://github.com/example/rbac-api/actions/runs/7|the run>" in text
    assert slack.json["blocks"][0]["text"]["text"] == text
    assert status.path == "/status"
    assert status.json == {
        "event": event,
        "status": notify.STATUS_PAGE_STATE[event],
        "service": "rbac-api",
        "environment": "production",
        "release": "v1.15.2",
        "message": "",
        "link": "https://github.com/example/rbac-api/actions/runs/7",
    }


def test_the_maintenance_window_says_so_and_the_status_page_shows_maintenance(
    ctx: StepContext, hooks: FakeWebhooks
) -> None:
    notify.run(ctx, event="maintenance-window", environment="production", environ=urls(hooks))
    assert "maintenance window" in hooks.received[0].json["text"]
    assert hooks.received[1].json["status"] == "under_maintenance"


def test_an_unset_url_skips_that_hook(ctx: StepContext, hooks: FakeWebhooks) -> None:
    result = notify.run(
        ctx, event="success", environment="staging", environ=urls(hooks, status_page=False)
    )
    assert result.skipped == ("status-page", "github-deployment")
    assert [r.path for r in hooks.received] == ["/slack/T000/B000/secret-token"]


def test_a_failing_webhook_is_reported_not_raised_and_hides_the_url(
    ctx: StepContext, hooks: FakeWebhooks
) -> None:
    hooks.answer("/slack/T000/B000/secret-token", 404, "no_service")
    result = notify.run(ctx, event="failure", environment="production", environ=urls(hooks))
    assert not result.ok
    (failed,) = result.failed
    assert failed.hook == "slack" and failed.status == 404
    assert "no_service" in failed.detail and "$SLACK_WEBHOOK_URL" in failed.detail
    assert "secret-token" not in failed.detail
    # The other hook was still told.
    assert [d.hook for d in result.deliveries if d.ok] == ["status-page"]


def test_a_failing_webhook_raises_when_required(ctx: StepContext, hooks: FakeWebhooks) -> None:
    hooks.answer("/status", 500, "down")
    with pytest.raises(EnvironmentUnreachable) as caught:
        notify.run(
            ctx, event="rollback", environment="production", environ=urls(hooks), required=True
        )
    assert "status-page: HTTP 500" in caught.value.message
    assert "secret-token" not in caught.value.one_line()


def test_required_with_no_hook_configured_raises(ctx: StepContext) -> None:
    with pytest.raises(EnvironmentUnreachable, match="no hook is configured"):
        notify.run(ctx, event="success", environment="production", environ={}, required=True)


def test_a_hook_that_does_not_answer_in_time_fails_at_the_deadline(
    ctx: StepContext, hooks: FakeWebhooks
) -> None:
    hooks.answer("/status", 200, "ok", delay_s=2.0)

    def post(url: str, payload: object, timeout_s: float) -> tuple[int, str]:
        return notify.default_post(url, payload, 0.3)  # type: ignore[arg-type]

    result = notify.run(
        ctx, event="success", environment="production", environ=urls(hooks), post=post
    )
    (failed,) = result.failed
    assert failed.hook == "status-page" and failed.status is None
    assert "ReadTimeout" in failed.detail and "/status" not in failed.detail


def test_unknown_event_and_environment_are_usage_errors(ctx: StepContext) -> None:
    with pytest.raises(UsageError):
        notify.run(ctx, event="deployed", environment="production", environ={})
    with pytest.raises(Exception, match="unknown environment"):
        notify.run(ctx, event="success", environment="prod", environ={})


def test_cli_reports_a_failed_hook_and_exits_0(hooks: FakeWebhooks) -> None:
    hooks.answer("/slack/T000/B000/secret-token", 500, "boom")
    result = CliRunner().invoke(
        cli,
        ["--config", str(CONFIG), "notify", "--event", "success", "--env", "production",
         "--release", "v1.15.2"],
        env={**urls(hooks), "GITHUB_ACTIONS": "true", "GITHUB_TOKEN": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "::warning title=deploytools notify::notify: slack failed: HTTP 500" in result.stdout
    assert "sent   status-page" in result.stdout
    assert "secret-token" not in result.output


def test_cli_required_exits_3_and_json_lists_deliveries(hooks: FakeWebhooks) -> None:
    runner = CliRunner()
    args = ["--config", str(CONFIG), "--json", "notify", "--event", "rollback", "--env", "staging"]
    env = {**urls(hooks), "GITHUB_TOKEN": ""}  # no GitHub deployment from a unit test
    ok = runner.invoke(cli, args, env=env)
    assert ok.exit_code == 0
    data = json.loads(ok.stdout)
    assert [d["hook"] for d in data["result"]["deliveries"]] == ["slack", "status-page"]
    hooks.answer("/status", 503, "maintenance")
    failed = runner.invoke(cli, [*args, "--required"], env=env)
    assert failed.exit_code == ExitCode.ENVIRONMENT


# -- The GitHub deployment of the release ------------------------------------------------------


@pytest.fixture(scope="module")
def github_server() -> Iterator[FakeGitHub]:
    with FakeGitHub() as server:
        yield server


@pytest.fixture(scope="module")
def github_client(github_server: FakeGitHub) -> GitHubDeployments:
    # One client for the module: building one reads ghapi's whole API description.
    return GitHubDeployments("example/rbac-api", "ghs_t", gh_host=github_server.url)


@pytest.fixture
def deployments(github_server: FakeGitHub) -> FakeDeploymentsApi:
    github_server.handlers.clear()
    github_server.answers.clear()
    github_server.requests.clear()
    return FakeDeploymentsApi.install(github_server, "example/rbac-api")


def test_a_release_goes_in_progress_then_success_on_one_github_deployment(
    ctx: StepContext, deployments: FakeDeploymentsApi, github_client: GitHubDeployments
) -> None:
    run = "https://github.com/example/rbac-api/actions/runs/9"
    for event in ("maintenance-window", "success"):
        result = notify.run(
            ctx,
            event=event,
            environment="production",
            release="v1.15.2",
            link=run,
            environ={},
            github=github_client,
        )
        assert result.ok and result.deliveries[-1].hook == "github-deployment"
    ((deployment_id, statuses),) = deployments.statuses.items()
    assert deployments.deployments[deployment_id]["ref"] == "v1.15.2"
    assert [s["state"] for s in statuses] == ["in_progress", "success"]
    assert {s["log_url"] for s in statuses} == {run}
    # environment_url: the environment's base_url in deploy.toml.
    assert {s["environment_url"] for s in statuses} == {"http://127.0.0.1:8080"}


def test_a_rolled_back_release_becomes_inactive(
    ctx: StepContext, deployments: FakeDeploymentsApi, github_client: GitHubDeployments
) -> None:
    for event in ("maintenance-window", "rollback"):
        notify.run(
            ctx,
            event=event,
            environment="production",
            release="v1.15.2",
            environ={},
            github=github_client,
        )
    ((_, statuses),) = deployments.statuses.items()
    assert [s["state"] for s in statuses] == ["in_progress", "inactive"]


def test_github_refusing_is_reported_like_a_webhook(
    ctx: StepContext, github_server: FakeGitHub, github_client: GitHubDeployments
) -> None:
    github_server.handlers.clear()
    github_server.answers.clear()
    github_server.respond("GET", "/repos/example/rbac-api/deployments", [])
    github_server.respond(
        "POST",
        "/repos/example/rbac-api/deployments",
        {"message": "Resource not accessible by integration"},
        status=403,
    )
    result = notify.run(
        ctx,
        event="failure",
        environment="production",
        release="v1.15.2",
        environ={},
        github=github_client,
    )
    (failed,) = result.failed
    assert failed.hook == "github-deployment" and "403" in failed.detail
