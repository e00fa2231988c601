"""`deploytools release verify --tag TAG [--repo PATH]`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from deploytools.cli.app import AppState, cli, emit, pass_state, release_source_options
from deploytools.steps import release as release_step
from deploytools.steps.release import ReleaseReport


@cli.group("release")
def release() -> None:
    """The release tag: verify it before anything is built or deployed."""


@release.command("verify")
@release_source_options
@click.option(
    "--target-env",
    "--for",
    "target_env",
    default=release_step.PRODUCTION,
    show_default=True,
    help="The environment the release is headed for (a key of deploy.toml). A pre-release tag "
    "(-rc.1) fails for production and for any environment with requires_approval = true.",
)
@click.option(
    "--allow-downgrade", is_flag=True, help="Accept a version not higher than the last release."
)
@click.option(
    "--since-revision",
    default=None,
    metavar="REV",
    help="The Alembic revision the migration lint starts from (default: the previous release's "
    "head; for a first release, the revision production's database is at).",
)
@pass_state
def verify(
    state: AppState,
    tag: str,
    repo: Path,
    source_dir: str | None,
    target_env: str,
    allow_downgrade: bool,
    since_revision: str | None,
) -> None:
    """Check a release tag before it is built: every check runs and prints one line.

    The tag's format, that it is annotated (and signed, when required) and on the release branch;
    VERSION at the tag; a clean, pushed work tree; release notes; a higher version than the last
    release; one Alembic head (read from the tag's tree as text) and the lint of the migrations
    since the previous release, rendered in the release's image when one is on the local engine,
    else announced for `image build` (which lints the image it builds and labels it
    expand-only or not); with a GitHub token, the commit's
    required checks, the code-quality gate's run on it (github.ci_workflow, default ci.yml:
    waited for up to github.ci_wait_s while it runs; its jobs are listed in the report's "Code
    Quality Status") and the protection of the `production` environment.

    Exits 0 when nothing failed, 1 when a check failed, 2 for a malformed or unknown tag or a
    path that is not a git repository (then nothing is checked).
    """
    ctx = state.context()
    if state.json:
        ctx.progress = _quiet  # the JSON document says it all
    report = release_step.run(
        ctx,
        tag=tag,
        repo=repo,
        target_env=target_env,
        source_dir=source_dir,
        allow_downgrade=allow_downgrade,
        since_revision=since_revision,
    )
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a", encoding="utf-8") as out:
            out.write(step_summary(report))

    def human() -> None:
        for finding in report.migration_findings:
            click.echo(f"       migration: {finding}", err=True)
        for job in report.code_quality.jobs:
            click.echo(f"       code quality: {job.name}: {job.state}", err=True)
        verdict = "passed" if report.ok else f"FAILED ({len(report.failed)} check(s))"
        kind = _kind(report)
        click.echo(
            f"release {report.tag} ({report.commit[:12]}) for {report.target_env}: {verdict}; "
            f"migrations: {kind}"
        )

    if report.ok:
        emit(state, report, human)
        return
    if not state.json:
        human()
    # Under --json the error object carries the whole report: one JSON document on stdout.
    report.raise_if_failed()


def _kind(report: ReleaseReport) -> str:
    if report.expand_only is None and report.migration_lint_at == "build":
        return "linted at the build (image build labels the image with the verdict)"
    return {True: "expand-only", False: "not expand-only", None: "unknown"}[report.expand_only]


def _quiet(message: str) -> None:
    """Progress is dropped under --json."""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def step_summary(report: ReleaseReport) -> str:
    """The checks as a Markdown table for the GitHub Actions job summary."""
    icon = {"passed": "✅", "failed": "❌", "skipped": "⏭️"}
    lines = [
        f"### Release verification: {report.tag} ({report.commit[:12]}) "
        f"→ {report.target_env}: {'passed' if report.ok else 'FAILED'}",
        "",
        "| Check | Result | Details |",
        "|---|---|---|",
    ]
    lines += [
        f"| {_cell(c.name)} | {icon[c.verdict]} {c.verdict} | {_cell(c.reason)} |"
        for c in report.checks
    ]
    lines += ["", f"Migrations: **{_kind(report)}**", ""]
    quality = report.code_quality
    lines += [f"#### Code quality: {_cell(quality.note)}", ""]
    if quality.jobs:
        lines += ["| Job | Result |", "|---|---|"]
        lines += [
            f"| {_cell(j.name)} | {'✅' if j.green else '❌'} {_cell(j.state)} |"
            for j in quality.jobs
        ]
        lines.append("")
    return "\n".join(lines) + "\n"
