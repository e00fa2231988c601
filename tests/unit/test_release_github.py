"""The GitHub checks of `release verify`, against a local fake of GitHub's REST API."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.github import GitHub
from deploytools.steps.release import check_github
from tests.fakes.github_server import FakeGitHub

REPO = "example/rbac-api"
SHA = "5c704ea6b000" + "0" * 28
ROOT = f"/repos/{REPO}"
CONFIG = Path(__file__).resolve().parents[2] / "deploy.toml"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture
def github(server: FakeGitHub) -> FakeGitHub:
    """The module's server, its answers and records reset for each test."""
    server.answers.clear()
    server.requests.clear()
    server.handlers.clear()
    server.protected_repository(REPO, sha=SHA)
    return server


@pytest.fixture(scope="module")
def api(server: FakeGitHub) -> GitHub:
    # Made once: ghapi builds its whole endpoint table on construction (most of a second).
    return GitHub(REPO, "test-token", gh_host=server.url)


def test_a_protected_repository_passes_and_the_token_is_sent(
    github: FakeGitHub, api: GitHub
) -> None:
    checks = api.required_checks_green(SHA, "main")
    env = api.environment_protected("production", "v1.15.2")
    assert checks.ok, checks.reason
    assert env.ok, env.reason
    assert "test, lint" in checks.reason
    assert github.paths() == [
        f"{ROOT}/branches/main",
        f"{ROOT}/rules/branches/main",
        f"{ROOT}/commits/{SHA}/check-runs",
        f"{ROOT}/commits/{SHA}/status",
        f"{ROOT}/environments/production",
        f"{ROOT}/environments/production/deployment-branch-policies",
    ]
    assert all(r.method == "GET" for r in github.requests)
    assert github.requests[0].headers["authorization"] == "token test-token"


def test_a_failed_required_check_fails(github: FakeGitHub, api: GitHub) -> None:
    runs = github.answers[("GET", f"{ROOT}/commits/{SHA}/check-runs")][1]
    runs["check_runs"][1]["conclusion"] = "failure"
    verdict = api.required_checks_green(SHA, "main")
    assert not verdict.ok
    assert "lint (failure)" in verdict.reason


def test_a_required_check_that_never_ran_fails(github: FakeGitHub, api: GitHub) -> None:
    runs = github.answers[("GET", f"{ROOT}/commits/{SHA}/check-runs")][1]
    runs["check_runs"] = runs["check_runs"][:1]
    verdict = api.required_checks_green(SHA, "main")
    assert not verdict.ok
    assert "never reported: lint" in verdict.reason


def test_a_ruleset_adds_required_checks(github: FakeGitHub, api: GitHub) -> None:
    github.respond(
        "GET",
        f"{ROOT}/rules/branches/main",
        [
            {"type": "deletion", "ruleset_id": 7},
            {
                "type": "required_status_checks",
                "ruleset_id": 8,
                "parameters": {
                    "strict_required_status_checks_policy": False,
                    "required_status_checks": [{"context": "e2e"}, {"context": "test"}],
                },
            },
        ],
    )
    assert api.required_checks("main") == ["test", "lint", "e2e"]
    verdict = api.required_checks_green(SHA, "main")
    assert not verdict.ok
    assert "never reported: e2e" in verdict.reason


def test_an_unprotected_branch_holds_the_release_to_every_check_that_ran(
    github: FakeGitHub, api: GitHub
) -> None:
    github.respond("GET", f"{ROOT}/branches/main", {"name": "main", "protected": False})
    assert api.required_checks("main") == []
    verdict = api.required_checks_green(SHA, "main")
    assert verdict.ok
    assert "requires no checks; all 2 checks" in verdict.reason
    runs = github.answers[("GET", f"{ROOT}/commits/{SHA}/check-runs")][1]
    runs["check_runs"][0]["conclusion"] = "failure"
    assert not api.required_checks_green(SHA, "main").ok


def test_a_commit_status_counts_as_a_check(github: FakeGitHub, api: GitHub) -> None:
    runs = github.answers[("GET", f"{ROOT}/commits/{SHA}/check-runs")][1]
    runs["check_runs"] = runs["check_runs"][:1]
    github.respond(
        "GET",
        f"{ROOT}/commits/{SHA}/status",
        {"state": "success", "statuses": [{"context": "lint", "state": "success"}]},
    )
    assert api.required_checks_green(SHA, "main").ok


def test_a_missing_environment_fails(github: FakeGitHub, api: GitHub) -> None:
    github.forget("GET", f"{ROOT}/environments/production")
    verdict = api.environment_protected("production", "v1.15.2")
    assert not verdict.ok
    assert "does not exist" in verdict.reason


def test_an_environment_without_reviewers_fails(github: FakeGitHub, api: GitHub) -> None:
    env = github.answers[("GET", f"{ROOT}/environments/production")][1]
    env["protection_rules"] = [r for r in env["protection_rules"] if r["type"] == "wait_timer"]
    verdict = api.environment_protected("production", "v1.15.2")
    assert not verdict.ok
    assert "no required reviewers" in verdict.reason


def test_an_environment_open_to_every_branch_fails(github: FakeGitHub, api: GitHub) -> None:
    env = github.answers[("GET", f"{ROOT}/environments/production")][1]
    env["deployment_branch_policy"] = None
    verdict = api.environment_protected("production", "v1.15.2")
    assert not verdict.ok
    assert "no deployment branch/tag policy" in verdict.reason


def test_protected_branches_only_does_not_admit_tags(github: FakeGitHub, api: GitHub) -> None:
    env = github.answers[("GET", f"{ROOT}/environments/production")][1]
    env["deployment_branch_policy"] = {"protected_branches": True, "custom_branch_policies": False}
    verdict = api.environment_protected("production", "v1.15.2")
    assert not verdict.ok
    assert "protected branches only" in verdict.reason


def test_a_tag_rule_that_does_not_match_fails(github: FakeGitHub, api: GitHub) -> None:
    github.respond(
        "GET",
        f"{ROOT}/environments/production/deployment-branch-policies",
        {"total_count": 1, "branch_policies": [{"name": "release-*", "type": "tag"}]},
    )
    verdict = api.environment_protected("production", "v1.15.2")
    assert not verdict.ok
    assert "no deployment tag rule admits v1.15.2" in verdict.reason


def _ctx() -> StepContext:
    config = load_config(CONFIG)
    github = dataclasses.replace(config.github, repository=REPO, token_env="DT_TEST_TOKEN")
    return StepContext(config=dataclasses.replace(config, github=github))


def test_without_a_token_both_checks_are_skipped_and_nothing_is_asked(
    github: FakeGitHub,
) -> None:
    results = check_github(_ctx(), commit=SHA, tag="v1.15.2", environ={}, gh_host=github.url)
    assert [(r.name, r.verdict) for r in results] == [
        ("github-required-checks", "skipped"),
        ("github-production-environment", "skipped"),
    ]
    assert "DT_TEST_TOKEN" in results[0].reason
    assert github.requests == []


def test_with_a_token_a_missing_environment_fails_the_release(github: FakeGitHub) -> None:
    github.forget("GET", f"{ROOT}/environments/production")
    results = check_github(
        _ctx(), commit=SHA, tag="v1.15.2", environ={"DT_TEST_TOKEN": "t"}, gh_host=github.url
    )
    assert [(r.name, r.verdict) for r in results] == [
        ("github-required-checks", "passed"),
        ("github-production-environment", "failed"),
    ]


def test_a_github_error_fails_the_check_with_the_status(github: FakeGitHub) -> None:
    github.respond("GET", f"{ROOT}/branches/main", {"message": "Bad credentials"}, status=401)
    results = check_github(
        _ctx(), commit=SHA, tag="v1.15.2", environ={"DT_TEST_TOKEN": "t"}, gh_host=github.url
    )
    assert results[0].verdict == "failed"
    assert "401" in results[0].reason
    assert results[1].verdict == "passed"
