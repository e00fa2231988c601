"""The GitHub gate of release verification: the branch's required checks, the code-quality
run on the tagged commit, and the production environment's protection."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from deploytools.context import StepContext
from deploytools.errors import DeployError
from deploytools.github import GitHub
from deploytools.steps.release_report import (
    PRODUCTION,
    CheckResult,
    CodeQuality,
    check_failed,
    check_passed,
    check_skipped,
)

#: Seconds between two reads of a code-quality run that is still going.
CI_POLL_S = 15.0
#: Seconds to wait for a code-quality run that has not started (of github.ci_wait_s).
CI_START_WAIT_S = 120.0


@dataclass(frozen=True)
class GitHubFindings:
    """What release verify learnt from GitHub: its checks, and the code-quality run."""

    checks: tuple[CheckResult, ...]
    code_quality: CodeQuality


#: The GitHub environment holding production's secrets for release.yml's jobs after the approval.
PRODUCTION_DEPLOY = "production-deploy"

GITHUB_CHECKS = ("github-required-checks", "github-code-quality", "github-production-environment")


def check_github(
    ctx: StepContext,
    *,
    commit: str,
    tag: str,
    environ: Mapping[str, str],
    gh_host: str | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GitHubFindings:
    """The tagged commit's required checks and code-quality run, and the production
    environment's protection. Each check fails on its own when GitHub cannot answer it."""
    settings = ctx.config.github
    token = environ.get(settings.token_env, "")
    if not token or not settings.repository:
        why = (
            f"no GitHub token (${settings.token_env} is not set)"
            if not token
            else "no github.repository in deploy.toml"
        )
        return GitHubFindings(
            tuple(check_skipped(n, why) for n in GITHUB_CHECKS), CodeQuality(f"not read: {why}")
        )
    api = GitHub(settings.repository, token, gh_host=gh_host or settings.api_url)
    results: list[CheckResult] = []
    try:
        checks = api.required_checks_green(commit, ctx.config.project.release_branch)
        results.append(
            CheckResult(GITHUB_CHECKS[0], "passed" if checks.ok else "failed", checks.reason)
        )
    except DeployError as exc:
        results.append(check_failed(GITHUB_CHECKS[0], exc.message))
    if not settings.ci_workflow:
        why = "github.ci_workflow is empty in deploy.toml"
        results.append(check_skipped(GITHUB_CHECKS[1], why))
        quality = CodeQuality(f"not read: {why}")
    else:
        try:
            result, quality = check_code_quality(
                api, commit, settings.ci_workflow, settings.ci_wait_s,
                progress=ctx.progress, clock=clock, sleep=sleep,
            )  # fmt: skip
        except DeployError as exc:
            result, quality = (
                check_failed(GITHUB_CHECKS[1], exc.message),
                CodeQuality(f"not read: {exc.message}"),
            )
        results.append(result)
    try:
        # The approval's environment, and the one holding production's secrets for the jobs
        # after it (no reviewers): its tag rule keeps other refs' runs from those secrets.
        verdicts = [
            api.environment_protected(PRODUCTION, tag),
            api.environment_protected(PRODUCTION_DEPLOY, tag, reviewers=False),
        ]
        ok = all(v.ok for v in verdicts)
        reason = "; ".join(v.reason for v in verdicts if v.ok is ok)
        results.append(CheckResult(GITHUB_CHECKS[2], "passed" if ok else "failed", reason))
    except DeployError as exc:
        results.append(check_failed(GITHUB_CHECKS[2], exc.message))
    return GitHubFindings(tuple(results), quality)


def check_code_quality(
    api: GitHub,
    commit: str,
    workflow: str,
    wait_s: float,
    *,
    progress: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[CheckResult, CodeQuality]:
    """The newest run of `workflow` on `commit` passed; waits up to `wait_s` for it to finish
    (or to start: a tag pushed with its commit races the gate)."""
    name = GITHUB_CHECKS[1]
    start = clock()
    # GitHub starts a pushed commit's run within seconds: one not started by CI_START_WAIT_S is
    # not coming, so a missing run is waited for less than a running one.
    deadlines = {False: start + wait_s, True: start + min(wait_s, CI_START_WAIT_S)}
    while True:
        run = api.ci_run(commit, workflow)
        deadline = deadlines[run is None]
        if (run is not None and run.completed) or clock() >= deadline:
            break
        state = "has not started" if run is None else f"is {run.status}"
        left = max(0.0, deadline - clock())
        progress(f"waiting   {workflow} on {commit[:12]} {state} ({left:.0f} s left to wait)")
        sleep(min(CI_POLL_S, left))
    waited = f" (waited {clock() - start:.0f} s)" if wait_s > 0 else ""
    if run is None:
        return (
            check_failed(
                name,
                f"{workflow} never ran on {commit[:12]}{waited}: the release has no "
                "code-quality result; push the commit to the release branch (the gate runs on "
                "push) and rerun",
            ),
            CodeQuality(f"{workflow} never ran on {commit[:12]}"),
        )
    summary = f"{workflow} run {run.run_id} (attempt {run.attempt})"
    quality = CodeQuality(
        f"{summary} on {commit[:12]}: {run.conclusion or run.status}", run.jobs, run.url
    )
    if not run.completed:
        going = ", ".join(j.name for j in run.jobs if j.state not in _FINISHED) or "all"
        return (
            check_failed(
                name,
                f"{summary} is still {run.status}{waited} (unfinished: {going}); rerun this "
                "check when it has finished",
            ),
            quality,
        )
    names = ", ".join(j.name for j in run.jobs)
    if run.green:
        return check_passed(
            name, f"{summary} passed: {len(run.jobs)} job(s) green: {names}"
        ), quality
    bad = ", ".join(f"{j.name} ({j.state})" for j in run.jobs if not j.green)
    return check_failed(name, f"{summary} concluded {run.conclusion}: {bad or names}"), quality


#: A job's states once it has finished (GitHub's conclusions).
_FINISHED = frozenset(
    {"success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required"}
)
