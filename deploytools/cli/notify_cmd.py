"""`deploytools notify --event E --env E`: Slack and the status page, for people."""

from __future__ import annotations

import os
from pathlib import Path

import click

from deploytools.cli.app import AppState, cli, emit, pass_state
from deploytools.errors import UsageError
from deploytools.steps import notify as notify_step


@cli.command("notify")
@click.option(
    "--event", type=click.Choice(notify_step.EVENTS), required=True, help="What happened."
)
@click.option("--env", "environment", required=True, help="The environment (a key of deploy.toml).")
@click.option("--release", default="", help="The release it concerns (tag or version).")
@click.option("--message", default="", help="More words for people.")
@click.option("--link", default="", help="A URL to the details, such as the Actions run.")
@click.option(
    "--required/--best-effort",
    default=None,
    help="Fail (exit 3) when a hook fails or none is configured. Default: "
    "notifications.required in deploy.toml (false: failures are reported only).",
)
@click.option(
    "--attach",
    # Not exists=True: a missing report is a usage error said in deploytools' own words.
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A Markdown file sent with the notice, such as `report --incident`'s output.",
)
@pass_state
def notify(
    state: AppState,
    event: str,
    environment: str,
    release: str,
    message: str,
    link: str,
    required: bool | None,
    attach: Path | None,
) -> None:
    """Post EVENT (maintenance-window, success, failure, rollback) to the Slack incoming webhook
    and the status page hook whose URLs are in the environment variables [notifications] names;
    with a GitHub token and --release, also set the release's GitHub Deployment in the
    environment (in_progress, success, failure, inactive).

    An unset URL variable skips that hook. A failing hook is reported (a warning, in GitHub
    Actions an annotation) and exits 0, so a deploy never stops for Slack, unless required.
    Failure and rollback notices name the escalation contacts and channels ([contacts]).
    """
    if attach is not None and not attach.is_file():
        raise UsageError(
            f"--attach {attach}: no such file",
            untouched="nothing was sent",
            hint="render it first (`deploytools report --incident --env ENV > FILE`)",
        )
    result = notify_step.run(
        state.context(),
        event=event,
        environment=environment,
        release=release,
        message=message,
        link=link,
        required=required,
        attachment=attach.read_text(encoding="utf-8") if attach else "",
    )
    for delivery in result.failed:
        line = f"notify: {delivery.hook} failed: {delivery.detail}"
        click.echo(f"warning: {line}", err=True)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            click.echo(f"::warning title=deploytools notify::{line}")

    def human() -> None:
        for delivery in result.deliveries:
            mark = "sent" if delivery.ok else "FAILED"
            click.echo(f"{mark:6} {delivery.hook}: {delivery.detail}")
        for hook in result.skipped:
            why = (
                "no GitHub token, or no --release"
                if hook == "github-deployment"
                else "its URL variable is not set"
            )
            click.echo(f"{'skip':6} {hook}: {why}")

    emit(state, result, human)
