"""`deploytools pipeline run --tag vX.Y.Z`: the whole runbook, step by step, resumable."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from deploytools.cli.app import AppState, cli, emit, pass_state
from deploytools.jsonable import jsonable
from deploytools.pipeline import walker
from deploytools.steps import monitor as monitor_step
from deploytools.store.records import who


@cli.group("pipeline")
def pipeline_group() -> None:
    """The whole release runbook in one command (pipeline/runbook.py's steps, in order)."""


@pipeline_group.command("run")
@click.option("--tag", required=True, help="The release tag, vMAJOR.MINOR.PATCH.")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="The release's git repository (its service at deploy.toml's source_dir when it is "
    "deploy.toml's own repository, else at its root).",
)
@click.option(
    "--yes",
    is_flag=True,
    help="Approve the production deploy (the gate asks on a terminal otherwise; without a "
    "terminal and without --yes the pipeline stops at the gate, exit 2, resumable).",
)
@click.option(
    "--monitor",
    "monitor",
    default="0",
    show_default=True,
    help="Watch production this long after verification (e.g. 60s, 5m, 1h), rolling back on a "
    "breach. Default 0: not watched locally (the release workflow watches for an hour).",
)
@click.option(
    "--monitor-interval",
    default=None,
    help="Time between monitor samples (default: [checks.monitor] interval_s, at most a "
    "fifth of --monitor).",
)
@click.option(
    "--outside-window",
    "outside_window",
    metavar="REASON",
    default=None,
    help="Go on outside the environments' deploy windows or during a freeze ([windows.ENV]); "
    "the reason is recorded in the release records and the report.",
)
@pass_state
def pipeline_run_command(
    state: AppState,
    tag: str,
    repo: Path,
    yes: bool,
    monitor: str,
    monitor_interval: str | None,
    outside_window: str | None,
) -> None:
    """Run the runbook for TAG: verify the release, build the image once (pinned by its ID),
    deploy staging, smoke, validate, the production approval, a verified backup, migrate,
    deploy production, verify, (monitor), then print the filled-in runbook report.

    One line per step with its duration goes to stderr. A failure past the gate rolls back as
    the release workflow does. Run it again after a failure, a stop at the gate or a kill: it
    continues at the first step not done (the pipeline record lives in production's backup
    store). A release already through the pipeline and serving is not deployed again. Exit 0
    success, 1 a check failed, 2 usage error or approval missing, 3 environment failure, 4
    another pipeline (or deploy) holds the lock. Outside an environment's deploy windows it
    refuses before any step (exit 2, naming the next allowed time) unless --outside-window.
    """
    monitor_s = monitor_step.parse_duration(monitor) if monitor not in ("0", "") else 0.0
    interval_s = monitor_step.parse_duration(monitor_interval) if monitor_interval else None
    approve = None
    if not yes and not state.json and sys.stdin.isatty():

        def approve(question: str) -> bool:
            return click.confirm(question + ". Approve?", err=True, default=False)

    result = walker.run(
        state.context(),
        tag=tag,
        repo=repo,
        approve=approve,
        approved_by=f"{who()} (--yes)" if yes else None,
        monitor_s=monitor_s,
        monitor_interval_s=interval_s,
        outside_window=outside_window,
        steps=state.pipeline_steps,
    )
    data = {
        "record": result.record,
        "resumed_from": result.resumed_from,
        "already_done": result.already_done,
        "report": result.report,
    }
    if result.error is not None:
        # One document either way: the error carries the record (and the report) with --json.
        result.error.facts["pipeline"] = jsonable(data)
        if not state.json and result.report_markdown:
            click.echo(result.report_markdown)
        raise result.error

    def human() -> None:
        click.echo(result.report_markdown or walker.render_summary(result.record))

    emit(state, data, human)
