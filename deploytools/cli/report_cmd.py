"""`deploytools report --env E [--release ID] [--format markdown|json]`: the filled-in runbook."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from deploytools.cli.app import AppState, cli, emit, pass_state
from deploytools.jsonable import jsonable
from deploytools.steps import incident as incident_step
from deploytools.steps import report as report_step


@cli.command("report")
@click.option("--env", "environment", required=True, help="The environment (a key of deploy.toml).")
@click.option(
    "--release", "release_id", default=None, help="A release record id; default: the newest."
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["markdown", "json"]),
    default="markdown",
    show_default=True,
    help="The runbook document as Markdown, or its data as JSON.",
)
@click.option(
    "--results",
    # Not exists=True: a run whose jobs uploaded nothing still gets its report (without them).
    type=click.Path(path_type=Path),
    multiple=True,
    help="JSON results (--json output) of release verify, smoke, validate, verify and monitor, "
    "or a directory of them; they fill in the verification summary and the metrics. Repeatable. "
    "Without it, the report uses the check results saved in the release records.",
)
@click.option(
    "--incident",
    is_flag=True,
    help="The incident report instead: the failed release (default: the newest rollback or "
    "failure) with its timeline, what failed, what was rolled back, the logs, the contacts "
    "and the open questions.",
)
@pass_state
def report(
    state: AppState,
    environment: str,
    release_id: str | None,
    output_format: str,
    results: tuple[Path, ...],
    incident: bool,
) -> None:
    """The runbook document of a release with its real values: the verification summary, each
    step's status and duration, the success metrics (target, measured, status), the backup, the
    exact rollback command, and the deployment log.

    The Markdown (under 1 MiB) is also appended to $GITHUB_STEP_SUMMARY when that is set.
    With --incident, the incident report (`notify --attach` sends it with the notice).
    """
    if incident:
        _incident(state, environment, release_id, output_format, results)
        return
    document = report_step.gather(
        state.context(), environment=environment, release_id=release_id, results=results
    )
    markdown = report_step.render_markdown(document)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as out:  # noqa: PTH123 - append mode
            out.write(markdown + "\n")
    if output_format == "json" and not state.json:
        click.echo(json.dumps(jsonable(report_step.to_json(document)), indent=2, sort_keys=True))
        return
    emit(state, report_step.to_json(document), lambda: click.echo(markdown, nl=False))


def _incident(
    state: AppState,
    environment: str,
    release_id: str | None,
    output_format: str,
    results: tuple[Path, ...],
) -> None:
    document = incident_step.gather(
        state.context(), environment=environment, release_id=release_id, results=results
    )
    markdown = incident_step.render_markdown(document)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as out:  # noqa: PTH123 - append mode
            out.write(markdown + "\n")
    if output_format == "json" and not state.json:
        click.echo(incident_step.dumps(document))
        return
    emit(state, incident_step.to_json(document), lambda: click.echo(markdown, nl=False))
