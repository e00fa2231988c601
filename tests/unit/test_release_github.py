"""The GitHub checks of `release verify`, against a local fake of GitHub's REST API."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.github import GitHub
from deploytools.steps.release import GITHUB_CHECKS, check_code_quality, check_github
from tests.fakes.github_server import CI_JOBS, FakeGitHub

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


def test_an_unprotected_branch_requires_nothing_and_ignores_other_workflows_checks(
    github: FakeGitHub, api: GitHub
) -> None:
    # The commit's check runs include the running release's own jobs (in progress) and, on a
    # re-run, its earlier attempt's failures: they must not fail the release.
    github.respond("GET", f"{ROOT}/branches/main", {"name": "main", "protected": False})
    runs = github.answers[("GET", f"{ROOT}/commits/{SHA}/check-runs")][1]
    runs["check_runs"][0].update(name="verify-release", status="in_progress", conclusion=None)
    runs["check_runs"][1].update(name="build-image", conclusion="failure")
    assert api.required_checks("main") == []
    verdict = api.required_checks_green(SHA, "main")
    assert verdict.ok
    assert "main requires no status checks" in verdict.reason
    assert f"{ROOT}/commits/{SHA}/check-runs" not in github.paths()


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
    assert [(r.name, r.verdict) for r in results.checks] == [
        ("github-required-checks", "skipped"),
        ("github-code-quality", "skipped"),
        ("github-production-environment", "skipped"),
    ]
    assert "DT_TEST_TOKEN" in results.checks[0].reason
    assert results.code_quality.jobs == ()
    assert "DT_TEST_TOKEN" in results.code_quality.note
    assert github.requests == []


def test_with_a_token_a_missing_environment_fails_the_release(github: FakeGitHub) -> None:
    github.forget("GET", f"{ROOT}/environments/production")
    results = check_github(
        _ctx(), commit=SHA, tag="v1.15.2", environ={"DT_TEST_TOKEN": "t"}, gh_host=github.url
    )
    assert [(r.name, r.verdict) for r in results.checks] == [
        ("github-required-checks", "passed"),
        ("github-code-quality", "passed"),
        ("github-production-environment", "failed"),
    ]


def test_a_github_error_fails_the_check_with_the_status(github: FakeGitHub) -> None:
    github.respond("GET", f"{ROOT}/branches/main", {"message": "Bad credentials"}, status=401)
    results = check_github(
        _ctx(), commit=SHA, tag="v1.15.2", environ={"DT_TEST_TOKEN": "t"}, gh_host=github.url
    )
    assert results.checks[0].verdict == "failed"
    assert "401" in results.checks[0].reason
    assert [r.verdict for r in results.checks[1:]] == ["passed", "passed"]


# -- The code-quality gate's run (ci.yml) ---------------------------------------------------------


class FakeClock:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _quality(api: GitHub, wait_s: float = 0.0, clock: FakeClock | None = None):  # type: ignore[no-untyped-def]
    clock = clock or FakeClock()
    progress: list[str] = []
    result, quality = check_code_quality(
        api, SHA, "ci.yml", wait_s, progress=progress.append, clock=clock, sleep=clock.sleep
    )
    return result, quality, progress


def test_a_green_ci_run_passes_and_lists_every_job(github: FakeGitHub, api: GitHub) -> None:
    result, quality, _ = _quality(api)
    assert (result.name, result.verdict) == ("github-code-quality", "passed")
    assert "ci.yml run 7001 (attempt 1) passed: 6 job(s) green" in result.reason
    assert [(j.name, j.state) for j in quality.jobs] == [(n, "success") for n in CI_JOBS]
    assert [j.seconds for j in quality.jobs] == [60.0 * (i + 1) for i in range(len(CI_JOBS))]
    assert quality.url == "https://github.com/example/rbac-api/actions/runs/7001"
    assert quality.note == "ci.yml run 7001 (attempt 1) on 5c704ea6b000: success"
    assert github.paths()[-2:] == [
        f"{ROOT}/actions/workflows/ci.yml/runs",
        f"{ROOT}/actions/runs/7001/jobs",
    ]
    runs_request = github.requests[-2]
    assert runs_request.query["head_sha"] == [SHA]


def test_a_failed_job_fails_the_gate_and_is_named(github: FakeGitHub, api: GitHub) -> None:
    jobs = github.ci_run(REPO, sha=SHA, conclusion="failure")
    for job in jobs["jobs"]:
        if job["name"] != "dependency-audit":
            job["conclusion"] = "success"
    result, quality, _ = _quality(api)
    assert result.verdict == "failed"
    assert result.reason.endswith("concluded failure: dependency-audit (failure)")
    assert [j.name for j in quality.jobs if not j.green] == ["dependency-audit"]


def test_the_newest_run_of_the_commit_counts(github: FakeGitHub, api: GitHub) -> None:
    github.ci_run(REPO, sha=SHA, run_id=7002, conclusion="failure")
    runs = github.answers[("GET", f"{ROOT}/actions/workflows/ci.yml/runs")][1]
    newer = {**runs["workflow_runs"][0], "id": 7003, "created_at": "2026-01-12T02:00:00Z",
             "conclusion": "success"}  # fmt: skip
    runs["workflow_runs"].append(newer)
    github.ci_run(REPO, sha=SHA, run_id=7003)
    github.respond("GET", f"{ROOT}/actions/workflows/ci.yml/runs", runs)
    result, quality, _ = _quality(api)
    assert result.verdict == "passed", result.reason
    assert "run 7003" in quality.note


def test_a_commit_the_gate_never_ran_on_fails_after_waiting(
    github: FakeGitHub, api: GitHub
) -> None:
    github.respond("GET", f"{ROOT}/actions/workflows/ci.yml/runs", {"total_count": 0,
                   "workflow_runs": []})  # fmt: skip
    clock = FakeClock()
    result, quality, progress = _quality(api, wait_s=40.0, clock=clock)
    assert result.verdict == "failed"
    assert "ci.yml never ran on 5c704ea6b000 (waited 40 s)" in result.reason
    assert quality.jobs == ()
    # Polled every 15 s up to the deadline, saying so each time, then gave up.
    assert clock.sleeps == [15.0, 15.0, 10.0]
    assert len(progress) == 3 and "has not started" in progress[0]
    # A run that has not started after 2 minutes is not coming: no 15-minute wait for it.
    clock = FakeClock()
    result, _, _ = _quality(api, wait_s=900.0, clock=clock)
    assert "never ran on 5c704ea6b000 (waited 120 s)" in result.reason
    assert sum(clock.sleeps) == 120.0


def test_a_running_gate_is_waited_for_until_it_finishes(github: FakeGitHub, api: GitHub) -> None:
    github.ci_run(REPO, sha=SHA, status="in_progress", conclusion=None)
    reads = []

    def finish_on_the_third_read(request, match):  # type: ignore[no-untyped-def]
        reads.append(request)
        status, body = github.answers[("GET", f"{ROOT}/actions/workflows/ci.yml/runs")]
        if len(reads) == 3:
            body["workflow_runs"][0].update(status="completed", conclusion="success")
            github.ci_run(REPO, sha=SHA)
        return status, body

    github.handle("GET", f"{ROOT}/actions/workflows/ci.yml/runs", finish_on_the_third_read)
    clock = FakeClock()
    result, quality, progress = _quality(api, wait_s=900.0, clock=clock)
    assert result.verdict == "passed", result.reason
    assert len(reads) == 3 and clock.sleeps == [15.0, 15.0]
    assert "is in_progress" in progress[0]
    assert {j.state for j in quality.jobs} == {"success"}


def test_a_gate_still_running_at_the_deadline_fails_naming_the_unfinished_jobs(
    github: FakeGitHub, api: GitHub
) -> None:
    jobs = github.ci_run(REPO, sha=SHA, status="in_progress", conclusion=None)
    jobs["jobs"][0].update(status="completed", conclusion="success")
    result, _, _ = _quality(api, wait_s=0.0)
    assert result.verdict == "failed"
    assert "is still in_progress (unfinished: lint, types, security-scan" in result.reason


def test_an_empty_ci_workflow_skips_the_gate(github: FakeGitHub) -> None:
    ctx = _ctx()
    settings = dataclasses.replace(ctx.config.github, ci_workflow="")
    ctx = StepContext(config=dataclasses.replace(ctx.config, github=settings))
    results = check_github(
        ctx, commit=SHA, tag="v1.15.2", environ={"DT_TEST_TOKEN": "t"}, gh_host=github.url
    )
    assert [r.verdict for r in results.checks] == ["passed", "skipped", "passed"]
    assert "ci_workflow is empty" in results.checks[1].reason
    assert not any("/actions/" in path for path in github.paths())
    assert GITHUB_CHECKS[1] == results.checks[1].name


@pytest.mark.parametrize(
    "spoil, why",
    [
        ("missing", 'environment "production-deploy" does not exist'),
        ("any-branch", "no deployment branch/tag policy"),
        ("other-tags", "no deployment tag rule admits v1.15.2"),
    ],
)
def test_the_environment_holding_productions_secrets_must_admit_only_release_tags(
    github: FakeGitHub, spoil: str, why: str
) -> None:
    """production-deploy has no reviewers (the jobs after the approval use it): its tag rule
    is what keeps other refs' runs away from production's secrets, so it is audited too."""
    path = f"{ROOT}/environments/production-deploy"
    if spoil == "missing":
        github.forget("GET", path)
    elif spoil == "any-branch":
        github.answers[("GET", path)][1]["deployment_branch_policy"] = None
    else:
        github.respond(
            "GET",
            f"{path}/deployment-branch-policies",
            {"total_count": 1, "branch_policies": [{"name": "release-*", "type": "tag"}]},
        )
    results = check_github(
        _ctx(), commit=SHA, tag="v1.15.2", environ={"DT_TEST_TOKEN": "t"}, gh_host=github.url
    )
    environment = results.checks[2]
    assert (environment.name, environment.verdict) == ("github-production-environment", "failed")
    assert why in environment.reason


def test_a_protected_pair_of_environments_passes(github: FakeGitHub) -> None:
    results = check_github(
        _ctx(), commit=SHA, tag="v1.15.2", environ={"DT_TEST_TOKEN": "t"}, gh_host=github.url
    )
    environment = results.checks[2]
    assert environment.verdict == "passed", environment.reason
    assert '"production-deploy" admits v1.15.2' in environment.reason
