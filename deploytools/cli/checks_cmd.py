"""`deploytools smoke|validate|verify --env E` and `deploytools monitor --env E --duration D`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime

import click

from deploytools.checks.results import CheckResult, Verdict, markdown_table
from deploytools.cli.app import AppState, cli, emit, pass_state
from deploytools.steps import check_suites as checks_step
from deploytools.steps import monitor as monitor_step

_ENV_OPTION = click.option(
    "--env", "environment", required=True, help="The environment (a key of deploy.toml)."
)
_INCONCLUSIVE_OPTION = click.option(
    "--allow-inconclusive",
    is_flag=True,
    help="Exit 0 when no check failed but some were inconclusive (default: exit 1).",
)


def mask_credentials(state: AppState, suite: str, environ: Mapping[str, str]) -> None:
    """In GitHub Actions, tell the runner to mask every test user's credentials in its logs
    before any request is made. The runner reads workflow commands from stderr as well as
    stdout; stderr keeps stdout one JSON document under --json (the jobs tee it to a file)."""
    if environ.get("GITHUB_ACTIONS") != "true":
        return
    config = state.config()
    for name in checks_step.users_needed(state.context(), suite):
        user = config.checks.users[name]
        # Every environment's names: which one this run reads is the step's business.
        variants = [user.secrets_in(""), *user.environments.values()]
        names = [n for v in variants for n in (v.username_env, v.password_env, v.token_env) if n]
        for var in names:
            value = environ.get(var)
            if value:
                click.echo(f"::add-mask::{value}", err=True)


def write_step_summary(title: str, results: tuple[CheckResult, ...]) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as summary:  # noqa: PTH123 - append mode
            summary.write(markdown_table(title, list(results)) + "\n")


def _run_suite(
    state: AppState,
    suite: str,
    environment: str,
    *,
    allow_inconclusive: bool,
    since: datetime | None = None,
    previous_image: str | None = None,
) -> None:
    mask_credentials(state, suite, os.environ)
    printer = None if state.json else (lambda r: click.echo(r.line()))
    report = checks_step.run_and_record(
        state.context(),
        environment=environment,
        suite=suite,
        since=since,
        on_result=printer,
        previous_image=previous_image,
    )
    if not state.json:
        click.echo(f"{report.title}: {report.recorded}")
    write_step_summary(report.title, report.results)
    report.raise_if_failed(allow_inconclusive=allow_inconclusive)

    def human() -> None:
        unsure = report.inconclusive
        note = f", {len(unsure)} inconclusive" if unsure else ""
        click.echo(f"{report.title}: {report.verdict.value} ({len(report.results)} checks{note})")

    emit(state, report, human)


@cli.command("smoke")
@_ENV_OPTION
@_INCONCLUSIVE_OPTION
@pass_state
def smoke(state: AppState, environment: str, allow_inconclusive: bool) -> None:
    """Runbook step 2: the fast smoke tests (health, database, login, RBAC, a short latency test).

    One line per check: verdict, name, measured value, threshold. Exit 1 if a check failed (or
    was inconclusive, unless --allow-inconclusive); 2 on a configuration error or missing test
    user credentials; 3 if the environment cannot be reached.
    """
    _run_suite(state, "smoke", environment, allow_inconclusive=allow_inconclusive)


@cli.command("validate")
@_ENV_OPTION
@_INCONCLUSIVE_OPTION
@click.option(
    "--previous-image",
    default=None,
    help="The previous release's image (or \"auto\": the one the environment's current release "
    "replaced, from its history): also run the smoke checks against it, beside the new release "
    "on the same database (backward compatibility; local engine only).",
)
@pass_state
def validate(
    state: AppState, environment: str, allow_inconclusive: bool, previous_image: str | None
) -> None:
    """Runbook step 3: all of staging validation: admin workflows, the end-to-end user flow,
    RBAC, error shapes, the latency test, the migration revision, the log scan and, with
    --previous-image, backward compatibility."""
    _run_suite(
        state,
        "validate",
        environment,
        allow_inconclusive=allow_inconclusive,
        previous_image=previous_image,
    )


@cli.command("verify")
@_ENV_OPTION
@_INCONCLUSIVE_OPTION
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
    default=None,
    help="Scan logs from this time (UTC unless it has an offset); default: since each app "
    "container started.",
)
@pass_state
def verify(
    state: AppState, environment: str, allow_inconclusive: bool, since: datetime | None
) -> None:
    """Runbook step 6: post-deployment verification: health, database and its migration
    revision, login, RBAC, sample endpoints, p95 latency, and no errors in the logs."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    _run_suite(state, "verify", environment, allow_inconclusive=allow_inconclusive, since=since)


@cli.command("monitor")
@_ENV_OPTION
@click.option(
    "--duration", required=True, help="How long to watch: 90s, 15m, 1h (seconds if no unit)."
)
@click.option(
    "--interval",
    default=None,
    help="Time between samples (default: [checks.monitor] interval_s in deploy.toml).",
)
@click.option(
    "--rollback-on-breach",
    is_flag=True,
    help="On a persistent breach, roll the environment back (then exit 1).",
)
@click.option(
    "--baseline",
    is_flag=True,
    help="Record this watch as the serving release's baseline if it has none, else compare "
    "with it (the 24-hour watch's scheduled runs); a regression exits 1 without a rollback.",
)
@click.option(
    "--only-after-release",
    "only_after",
    default=None,
    metavar="DURATION",
    help="Watch only while the serving release finished less than DURATION ago (24h: the "
    "runbook's watch after a deploy); later, or with no release recorded, exit 0 and watch "
    "nothing. For scheduled watches, which then end by themselves.",
)
@pass_state
def monitor(
    state: AppState,
    environment: str,
    duration: str,
    interval: str | None,
    rollback_on_breach: bool,
    baseline: bool,
    only_after: str | None,
) -> None:
    """Runbook step 7: watch the service's metrics, its containers' CPU and memory, and the
    monitor probes; a breach counts only when it persists (see [checks.monitor]).

    Exit 0 when nothing breached (blips are reported), 1 on a breach (after the rollback, with
    --rollback-on-breach), 2 on a usage or configuration error, 3 if the environment cannot be
    reached.
    """
    duration_s = monitor_step.parse_duration(duration)
    interval_s = monitor_step.parse_duration(interval) if interval else None
    only_after_s = monitor_step.parse_duration(only_after) if only_after is not None else None
    mask_credentials(state, "monitor", os.environ)

    def tell(window: monitor_step.WatchWindow) -> None:
        if window.open and not state.json:
            click.echo(f"monitor on {environment}: {window.reason}")

    def show(sample: monitor_step.MonitorSample) -> None:
        bad = [r for r in sample.results if r.verdict is Verdict.FAIL]
        line = f"sample {sample.index} {sample.at}: {len(sample.results) - len(bad)} ok"
        if bad:
            line += f", {len(bad)} failed: " + "; ".join(
                f"{r.name} ({r.detail or r.measured})" for r in bad
            )
        click.echo(line)

    report = monitor_step.run_if_recent(
        state.context(),
        environment=environment,
        duration_s=duration_s,
        only_after_s=only_after_s,
        interval_s=interval_s,
        rollback_on_breach=rollback_on_breach,
        on_sample=None if state.json else show,
        baseline=baseline,
        on_window=tell,
    )
    if isinstance(report, monitor_step.WatchWindow):
        window = report
        emit(state, window, lambda: click.echo(f"monitor on {environment}: {window.reason}"))
        return
    if not state.json:
        for result in report.results:
            click.echo(result.line())
        click.echo(f"{report.title}: {report.recorded}")
    write_step_summary(report.title, report.results)
    report.raise_if_failed()

    def human() -> None:
        click.echo(
            f"{report.title}: no breach in {report.samples} samples over {report.duration_s:g} s"
        )

    emit(state, report, human)
