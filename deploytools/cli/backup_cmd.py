"""`deploytools backup create|verify|list|restore|prune` and `deploytools lock show|break`."""

from __future__ import annotations

import click

from deploytools.cli.app import AppState, cli, emit, pass_state
from deploytools.sizes import human_size
from deploytools.steps import backup as backup_step
from deploytools.steps import lock as lock_step
from deploytools.store.records import BackupManifest

ENV_OPTION = click.option(
    "--env", "environment", required=True, help="The environment (a key of deploy.toml)."
)


@cli.group("backup")
def backup_group() -> None:
    """Back up, verify and restore an environment's database (runbook step 4).

    Backups live in the store on the environment's engine (backups.store in deploy.toml), so
    every runner sees the same ones and a rollback or a restore leaves them in place.
    """


@backup_group.command("create")
@ENV_OPTION
@click.option("--verify/--no-verify", default=True, show_default=True, help="Verify it at once.")
@pass_state
def backup_create(state: AppState, environment: str, verify: bool) -> None:
    """Dump the database (pg_dump, custom format, inside its container) into the store.

    Refuses when the store has less free space than twice the database's size. Exits 1 when
    the verification fails, 3 when the database or the engine cannot be reached.
    """
    done = backup_step.run(state.context(), environment=environment, verify=verify)
    manifest, verification = done.manifest, done.verification
    data = {"manifest": manifest, "verification": verification}

    def human() -> None:
        click.echo(f"backup {manifest.id}: {_summary(manifest)}")
        if verification is not None:
            click.echo("verified: sha256, pg_restore --list, test restore, row counts")

    emit(state, data, human)


@backup_group.command("verify")
@ENV_OPTION
@click.argument("backup_id")
@click.option(
    "--remote",
    is_flag=True,
    help="Verify the backup's off-host copies instead ([backups] copy_to): each copy's sha256 "
    "as recorded and, decrypted, its content's.",
)
@pass_state
def backup_verify(state: AppState, environment: str, backup_id: str, remote: bool) -> None:
    """Check a backup: its sha256, `pg_restore --list`, and a test restore into a scratch
    database (dropped afterwards) whose row counts must equal the manifest's. Exits 1 if not."""
    if remote:
        checked = backup_step.verify_copies(
            state.context(), environment=environment, backup_id=backup_id
        )

        def human_copies() -> None:
            for c in checked:
                click.echo(f"copy ok: {c['location']} ({c['file']})")

        emit(state, {"backup_id": backup_id, "copies": checked}, human_copies)
        return
    result = backup_step.verify(state.context(), environment=environment, backup_id=backup_id)
    emit(state, result, lambda: click.echo(f"backup {backup_id}: verified ({result.verified})"))


@backup_group.command("list")
@ENV_OPTION
@pass_state
def backup_list(state: AppState, environment: str) -> None:
    """List the environment's backups, oldest first, with their verification."""
    listing = backup_step.list_backups(state.context(), environment=environment)

    def human() -> None:
        click.echo(f"{listing.environment}: {len(listing.backups)} backups in {listing.store}")
        for m in listing.backups:
            v = listing.verifications.get(m.id)
            mark = "unverified" if v is None else ("verified" if v.ok else "FAILED verify")
            click.echo(f"  {m.id}  {mark:<13} {_summary(m)}")
        for name in listing.kept_databases:
            click.echo(
                f"  kept database {name}: replaced by a restore, no verified safety backup of "
                f"it yet (`deploytools backup secure --env {listing.environment} {name}`)"
            )

    emit(state, listing, human)


@backup_group.command("restore")
@ENV_OPTION
@click.argument("backup_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--lock-wait", type=float, default=0.0, help="Wait this many seconds for the lock.")
@pass_state
def backup_restore(
    state: AppState, environment: str, backup_id: str, yes: bool, lock_wait: float
) -> None:
    """Replace the database with a backup (after a verified safety backup of what is there).

    Says how many rows differ from the backup (the writes a restore undoes) and asks first,
    unless --yes. A backup that fails its checks is refused before anything changes.
    """

    def confirm(question: str) -> bool:
        return click.confirm(question, abort=True, err=True)

    result = backup_step.restore(
        state.context(),
        environment=environment,
        backup_id=backup_id,
        lock_wait_s=lock_wait,
        confirm=None if yes else confirm,
    )

    def human() -> None:
        click.echo(
            f"restored {backup_id} into {environment}: {result.rows_dropped} rows differed; "
            f"revision {result.revision_before or 'none'} -> {result.revision_after or 'none'}; "
            f"safety backup {result.safety_backup_id or 'none'}"
        )
        if result.safety_error:
            click.echo(f"warning: {result.safety_error}", err=True)

    emit(state, result, human)


@backup_group.command("secure")
@ENV_OPTION
@click.argument("database")
@pass_state
def backup_secure(state: AppState, environment: str, database: str) -> None:
    """Take the verified safety backup of DATABASE, a database a restore or rollback replaced
    and kept because its safety backup failed (`backup list` names them), then drop it."""
    result = backup_step.secure(state.context(), environment=environment, database=database)
    emit(
        state,
        result,
        lambda: click.echo(
            f"safety backup {result.safety_backup_id} of {database} verified; "
            + (f"{database} dropped" if result.kept_database is None else f"{database} kept")
        ),
    )


@backup_group.command("prune")
@ENV_OPTION
@pass_state
def backup_prune(state: AppState, environment: str) -> None:
    """Delete old backups: keeps the newest backups.retention verified ones, any newer ones,
    and the one the newest release record points to."""
    deleted = backup_step.prune(state.context(), environment=environment)
    emit(state, {"deleted": deleted}, lambda: click.echo(f"deleted {len(deleted)} backups"))


@cli.group("lock")
def lock_group() -> None:
    """Show or break an environment's deploy lock."""


@lock_group.command("show")
@ENV_OPTION
@pass_state
def lock_show(state: AppState, environment: str) -> None:
    """Who holds the deploy lock, since when."""
    held = lock_step.show(state.context(), environment=environment)

    def human() -> None:
        if held is None:
            click.echo(f"{environment}: not locked")
        else:
            click.echo(
                f"{environment}: locked by {held.holder} (pid {held.pid}, {held.operation}) "
                f"since {held.since}, refreshed {held.refreshed}, ttl {held.ttl_s} s"
            )

    emit(state, {"lock": held}, human)


@lock_group.command("break")
@ENV_OPTION
@click.option("--force", is_flag=True, help="Break it even within its time-to-live.")
@pass_state
def lock_break(state: AppState, environment: str, force: bool) -> None:
    """Remove a lock whose holder is gone (not refreshed for longer than deploy.lock_ttl_s, or
    its process is dead on this host). Exits 4 if the lock is still fresh (unless --force)."""
    broken = lock_step.break_lock(state.context(), environment=environment, force=force)

    def human() -> None:
        if broken is None:
            click.echo(f"{environment}: not locked; nothing to break")
        else:
            click.echo(f"{environment}: broke the lock of {broken.holder} since {broken.since}")

    emit(state, {"broken": broken}, human)


def _summary(m: BackupManifest) -> str:
    return (
        f"{m.created}, {human_size(m.size)}, revision {m.revision or 'none'}, "
        f"version {m.version or '?'}, {m.total_rows} rows in {len(m.row_counts)} tables "
        f"({m.reason})"
    )
