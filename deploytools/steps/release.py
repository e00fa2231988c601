"""`deploytools release verify`: the runbook's pre-deployment review of a release tag.

Every check reads git (never the work tree, except where the check is about the work tree) and
runs even when an earlier one failed, so that one run shows every problem. A malformed tag, an
unknown tag or a path that is not a git repository is a usage error before any check runs.

The rooms: `release_version` (the tag's version), `release_source` (what the tag and its source
say), `release_github` (the GitHub gate), `release_report` (the results); this module is the
step that runs them in the runbook's order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from deploytools.context import StepContext
from deploytools.engine.git import GitRunner, run_git
from deploytools.errors import UsageError
from deploytools.steps.migration_check import MigrationChecks
from deploytools.steps.release_github import (
    CI_POLL_S,
    CI_START_WAIT_S,
    GITHUB_CHECKS,
    PRODUCTION_DEPLOY,
    GitHubFindings,
    check_code_quality,
    check_github,
)
from deploytools.steps.release_report import (
    PRODUCTION,
    CheckList,
    CheckResult,
    CodeQuality,
    ReleaseReport,
    Verdict,
)
from deploytools.steps.release_source import (
    changelog_section,
    check_annotated,
    check_clean_tree,
    check_migrations,
    check_nothing_unpushed,
    check_on_release_branch,
    check_release_notes,
    check_signed,
    check_tag_format,
    check_version_file,
    check_version_order,
    default_source_dir,
    extracted,
    previous_release,
    release_versions,
    repository_root,
    tag_commit,
)
from deploytools.steps.release_version import TAG_RE, Version, parse_tag
from deploytools.store.records import utc_now

# -- The step ------------------------------------------------------------------------------------


def run(
    ctx: StepContext,
    *,
    tag: str,
    repo: Path,
    target_env: str = PRODUCTION,
    source_dir: str | None = None,
    allow_downgrade: bool = False,
    environ: Mapping[str, str] | None = None,
    gh_host: str | None = None,
    since_revision: str | None = None,
    runner: GitRunner = run_git,
) -> ReleaseReport:
    """Verify release tag `tag` of the git repository at `repo`; every check runs.

    :param ctx: the step context (configuration, progress).
    :param tag: the release tag, `vMAJOR.MINOR.PATCH` (a `-PRERELEASE` only for staging).
    :param repo: a path inside the release's git work tree.
    :param target_env: the environment the release is meant for; pre-releases fail production.
    :param source_dir: the service's directory in the repository, relative to its root; None
        takes `project.source_dir` when `repo` is deploy.toml's own repository, else the root.
    :param allow_downgrade: accept a version not higher than the last release.
    :param environ: where the GitHub token is read from (default: os.environ).
    :param gh_host: the GitHub API root, overriding github.api_url.
    :param since_revision: the revision the migration lint starts from; None: the previous
        release's head, or for a first release the revision production's database is at.
    :param runner: runs git argv (tests may swap it).
    :raises UsageError: a malformed or unknown tag, or `repo` is not a git repository.
    """
    started = utc_now()
    version = parse_tag(tag)
    environment = ctx.config.environment(target_env)  # an unknown name is a usage error
    root = repository_root(repo, runner)
    commit = tag_commit(root, tag, runner)
    environ = os.environ if environ is None else environ
    source = source_dir if source_dir is not None else default_source_dir(ctx, root)
    source = PurePosixPath(source).as_posix()
    if source.startswith("/") or ".." in PurePosixPath(source).parts:
        raise UsageError(
            f"--source-dir must be a path inside the repository, got {source}",
            untouched="nothing was done",
        )
    project = ctx.config.project
    checks: list[CheckResult] = []

    def add(result: CheckResult) -> None:
        checks.append(result)
        ctx.progress(f"{result.verdict:<7} {result.name}: {result.reason}")

    add(check_tag_format(version, target_env, guarded=environment.requires_approval))
    add(check_annotated(root, tag, runner))
    add(check_on_release_branch(root, tag, commit, project.remote, project.release_branch, runner))
    add(check_signed(root, tag, ctx.config.release.require_signed_tag, runner))
    add(check_version_file(root, tag, version, source, runner))
    add(check_clean_tree(root, runner))
    add(check_nothing_unpushed(root, runner))
    add(check_release_notes(root, tag, version, source, runner))
    versions = release_versions(root, runner)
    add(check_version_order(versions, version, allow_downgrade))
    previous = previous_release(versions, version)
    migrations = check_migrations(
        ctx, root, tag, previous, source, runner, commit=commit, since_revision=since_revision
    )
    add(migrations.heads)
    add(migrations.lint)
    github = check_github(ctx, commit=commit, tag=tag, environ=environ, gh_host=gh_host)
    for result in github.checks:
        add(result)
    return ReleaseReport(
        tag=tag,
        version=str(version),
        commit=commit,
        target_env=target_env,
        repository=str(root),
        source_dir=source,
        checks=tuple(checks),
        previous_tag=previous.tag if previous else None,
        expand_only=migrations.expand_only,
        migration_findings=migrations.findings,
        migration_lint_at=migrations.lint_at,
        code_quality=github.code_quality,
        started=started,
        finished=utc_now(),
    )


__all__ = [
    "CI_POLL_S",
    "CI_START_WAIT_S",
    "GITHUB_CHECKS",
    "PRODUCTION",
    "PRODUCTION_DEPLOY",
    "TAG_RE",
    "CheckList",
    "CheckResult",
    "CodeQuality",
    "GitHubFindings",
    "GitRunner",
    "MigrationChecks",
    "ReleaseReport",
    "Verdict",
    "Version",
    "changelog_section",
    "check_annotated",
    "check_clean_tree",
    "check_code_quality",
    "check_github",
    "check_migrations",
    "check_nothing_unpushed",
    "check_on_release_branch",
    "check_release_notes",
    "check_signed",
    "check_tag_format",
    "check_version_file",
    "check_version_order",
    "default_source_dir",
    "extracted",
    "parse_tag",
    "previous_release",
    "release_versions",
    "repository_root",
    "run",
    "run_git",
    "tag_commit",
]
