"""`deploytools deploy`, `migrate`, `rollback`, `history`: runbook step 5 and its rollback plan."""

from __future__ import annotations

import sys

import click

from deploytools.cli.app import AppState, cli, emit, pass_state
from deploytools.steps import deploy as deploy_step
from deploytools.steps import migrate as migrate_step
from deploytools.steps import rollback as rollback_step
from deploytools.steps import status as status_step
from deploytools.store.records import ReleaseRecord, who

ENV_OPTION = click.option(
    "--env", "environment", required=True, help="The environment (a key of deploy.toml)."
)
OUTSIDE_WINDOW_OPTION = click.option(
    "--outside-window",
    "outside_window",
    metavar="REASON",
    default=None,
    help="Go on outside the environment's deploy windows or during a freeze; the reason is "
    "recorded in the release record and the report.",
)
LOCK_WAIT_OPTION = click.option(
    "--lock-wait",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds to wait for another deploy's lock (0: fail at once with exit 4).",
)


@cli.command("deploy")
@ENV_OPTION
@click.option("--image", required=True, help="The release image (already on the engine).")
@click.option(
    "--strategy",
    type=click.Choice(deploy_step.STRATEGY_NAMES),
    default="auto",
    show_default=True,
    help="How the old app is replaced: auto (rolling when the image is labelled expand-only "
    "and the proxy can switch, else recreate), rolling, or recreate.",
)
@click.option("--no-backup-check", is_flag=True, help="Go on without a verified backup (recorded).")
@click.option(
    "--yes",
    is_flag=True,
    help="Approve the deploy to an environment with requires_approval (asked on a terminal "
    "otherwise; without a terminal and without --yes: exit 2, nothing touched).",
)
@LOCK_WAIT_OPTION
@OUTSIDE_WINDOW_OPTION
@pass_state
def deploy(
    state: AppState,
    environment: str,
    image: str,
    strategy: str,
    no_backup_check: bool,
    yes: bool,
    lock_wait: float,
    outside_window: str | None,
) -> None:
    """Deploy IMAGE: lock, verified backup, stop, migrate, start, wait healthy, record.

    The strategy (auto by default) and why it was chosen are printed and recorded; a recreate
    in production announces its maintenance window first. Deploying the image that already
    runs healthy does nothing. A failed migration starts the old release again (exit 3); a new
    release that does not become healthy is rolled back automatically (exit 1). Exit 4 when
    another deploy holds the lock. Cancelled (SIGINT, SIGTERM) while a recreate's app is
    stopped, it puts a release back first (the old one's same containers, or the new one once
    its migration committed) and exits 130 saying which. Outside the environment's deploy
    windows ([windows.ENV]) it refuses with the next allowed time (exit 2) unless
    --outside-window REASON. An environment with requires_approval asks first on a terminal;
    --yes approves.
    """
    confirm = None
    if not yes and not state.json and sys.stdin.isatty():

        def confirm(question: str) -> bool:
            return click.confirm(question + ". Go on?", err=True, default=False)

    result = deploy_step.run(
        state.context(),
        environment=environment,
        image=image,
        strategy=strategy,
        lock_wait_s=lock_wait,
        no_backup_check=no_backup_check,
        outside_window=outside_window,
        confirm=confirm,
        approved_by=f"{who()} (--yes)" if yes else None,
    )

    def human() -> None:
        click.echo(result.message)
        if result.record is not None and result.changed:
            _print_record(result.record)

    emit(state, result, human)


@cli.command("migrate")
@ENV_OPTION
@click.option("--image", required=True, help="The image whose migrations run.")
@click.option("--sql", is_flag=True, help="Print the SQL instead of running it.")
@click.option("--no-backup-check", is_flag=True, help="Run without a verified backup (recorded).")
@LOCK_WAIT_OPTION
@OUTSIDE_WINDOW_OPTION
@pass_state
def migrate(
    state: AppState,
    environment: str,
    image: str,
    sql: bool,
    no_backup_check: bool,
    lock_wait: float,
    outside_window: str | None,
) -> None:
    """Run IMAGE's migrations in a one-off container on the stack's network.

    Refuses (exit 2) without a verified backup taken after the last release, unless
    --no-backup-check. A failed migration leaves the schema at its revision (exit 3). Outside
    the deploy windows it refuses (exit 2) unless --outside-window REASON.
    """
    result = migrate_step.run(
        state.context(),
        environment=environment,
        image=image,
        sql=sql,
        no_backup_check=no_backup_check,
        lock_wait_s=lock_wait,
        outside_window=outside_window,
    )

    def human() -> None:
        if result.sql is not None:
            click.echo(result.sql, nl=False)
            return
        click.echo(
            f"migrated {environment}: revision {result.revision_before or 'none'} -> "
            f"{result.revision_after or 'none'} in {result.seconds:.1f} s"
            + (f" (backup {result.backup_id})" if result.backup_id else " (no backup check)")
        )

    emit(state, result, human)


@cli.command("rollback")
@ENV_OPTION
@click.option("--to", "to", default=None, help="Release id, version or image to go back to.")
@click.option(
    "--restore-db", is_flag=True, help="Restore the backup taken before the newer deploy."
)
@click.option("--yes", is_flag=True, help="Do not ask before restoring the database.")
@LOCK_WAIT_OPTION
@pass_state
def rollback(
    state: AppState,
    environment: str,
    to: str | None,
    restore_db: bool,
    yes: bool,
    lock_wait: float,
) -> None:
    """Go back to the previous (or the named) release and wait until it is healthy.

    The database is restored with --restore-db, or on its own when the newer release's
    migrations changed the revision and its record says they were not expand-only. Before a
    restore, the rows it would drop are shown (and confirmed unless --yes or --json).
    """

    def confirm(message: str) -> bool:
        if yes or state.json:
            return True
        return click.confirm(message + ". Go on?", err=True)

    record = rollback_step.run(
        state.context(),
        environment=environment,
        to=to,
        restore_db=restore_db,
        lock_wait_s=lock_wait,
        confirm=confirm,
    )
    emit(state, record, lambda: _print_record(record))


@cli.command("history")
@ENV_OPTION
@click.option("--limit", type=int, default=20, show_default=True, help="Newest records shown.")
@pass_state
def history(state: AppState, environment: str, limit: int) -> None:
    """The environment's releases (deploys, rollbacks, migrations), newest first, with the
    backups and the lock."""
    found = status_step.history(state.context(), environment=environment, limit=limit)
    current, lock, manifests = found.current, found.lock, found.backups

    def human() -> None:
        click.echo(
            f"{environment}: serving "
            + (f"{current.image} (release {current.id})" if current else "no recorded release")
        )
        if lock is not None:
            click.echo(f"  LOCKED by {lock.holder} ({lock.operation}) since {lock.since}")
        for r in found.releases:
            click.echo(
                f"  {r.id} {r.kind:<8} {r.outcome:<11} {r.started} {r.image} "
                f"rev {r.revision_before or '-'}->{r.revision_after or '-'} by {r.who}"
                + (" (watch-window rollback: switched back)" if r.watch_window_rollback else "")
                + (
                    f" (keeps {r.kept_container_name} until {r.kept_until})"
                    if r.kept_container
                    else ""
                )
            )
        click.echo(f"  backups: {len(manifests)}")
        for m in manifests[-5:]:
            v = found.verifications.get(m.id)
            mark = "unverified" if v is None else ("verified" if v.ok else "FAILED")
            click.echo(f"    {m.id} {mark} {m.created} rev {m.revision or '-'} ({m.reason})")

    emit(state, found, human)


def _print_record(r: ReleaseRecord) -> None:
    click.echo(
        f"release {r.id} ({r.kind}, {r.outcome}): {r.image} by {r.who}; "
        f"revision {r.revision_before or 'none'} -> {r.revision_after or 'none'}; "
        f"backup {r.backup_id or r.restored_backup or 'none'}"
    )
    if r.kind == "deploy" and r.strategy_reason:
        click.echo(f"  strategy: {r.strategy}, {r.strategy_reason}")
    if r.approved_by:
        click.echo(f"  approved by {r.approved_by}")
    if r.maintenance:
        click.echo(f"  {r.maintenance}")
    if r.timings:
        click.echo("  " + ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items()))
    if r.outside_window:
        click.echo(f"  outside the deploy windows: {r.outside_window}")
    for note in r.notes:
        click.echo(f"  {note}")
