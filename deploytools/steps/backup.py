"""Runbook step 4, "Backup & Snapshot": create, verify, list, restore and prune backups.

A backup is `pg_dump --format=custom` run inside the database container, streamed through
deploytools into the backup store on the same engine (see deploytools/store/), with a manifest that
says what it holds. It only counts once verified: its sha256 matches, pg_restore reads it, and a
test restore into a scratch database has the manifest's row counts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from deploytools import copies
from deploytools.commands import postgres as pg
from deploytools.context import StepContext
from deploytools.database import Database
from deploytools.errors import CheckFailed, DeployError, ExternalCommandFailed, UsageError
from deploytools.platforms import Platform
from deploytools.session import EnvSession, open_environment
from deploytools.sizes import human_size
from deploytools.store.files import ExecResult
from deploytools.store.records import BackupManifest, ReleaseRecord, Verification, utc_now
from deploytools.target import VERSION_LABEL
from deploytools.volumes import restore as restore_volumes
from deploytools.volumes import snapshot as snapshot_volume
from deploytools.volumes import verify as verify_volumes

#: Bytes between two progress lines while a dump streams.
PROGRESS_EVERY = 64 << 20


@dataclass(frozen=True)
class BackupListing:
    environment: str
    store: str
    backups: tuple[BackupManifest, ...]
    verifications: dict[str, Verification | None] = field(default_factory=dict)
    #: Databases replaced by a restore whose safety backup did not verify: kept, never
    #: dropped by deploytools until a safety backup of them verified (`secure_replaced`).
    kept_databases: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestoreResult:
    environment: str
    backup_id: str
    safety_backup_id: str | None
    rows_dropped: int
    table_differences: dict[str, int]
    revision_before: str | None
    revision_after: str | None
    #: The database replaced, kept under this name until its safety backup is verified (then
    #: dropped: None). Set when the safety backup failed or is not taken yet.
    kept_database: str | None = None
    #: Why the safety backup of the replaced database failed (it is kept, see kept_database).
    safety_error: str | None = None


# -- create ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """What a backup's data belonged to: the release record, the app image and its version."""

    release: str | None
    image: str | None
    version: str | None


def current_origin(session: EnvSession) -> Origin:
    """The release serving now and the app image running now (the record's if none runs)."""
    current = session.history.current_release()
    app = _app_image(session.platform)
    return Origin(
        release=current.id if current else None,
        image=app[0] if app else (current.image if current else None),
        version=app[1] if app else (current.version if current else None),
    )


@dataclass(frozen=True)
class BackupRun:
    """What runbook step 4's backup did: the backup, its verification (None: not asked), and
    the old backups that retention deleted after it was verified."""

    manifest: BackupManifest
    verification: Verification | None
    pruned: tuple[str, ...] = ()


def run(
    ctx: StepContext, *, environment: str, reason: str = "manual", verify: bool = True
) -> BackupRun:
    """Runbook step 4, as `deploytools backup create` and `pipeline run` both run it: take a
    backup, verify it (in the same pass, see `create_in`), and only then apply retention
    ([backups] retention), so that a new backup never pushes out an old one before it is known
    to restore.

    :param ctx: the step context.
    :param environment: the environment's name in deploy.toml.
    :param reason: why it was taken (manual, pre-deploy), kept in the manifest.
    :param verify: verify it (and then prune); False takes the backup only.
    :raises CheckFailed: the backup failed its verification (nothing was kept or pruned).
    """
    with open_environment(ctx, environment) as session:
        manifest = create_in(session, reason=reason, verify=verify)
        if not verify:
            return BackupRun(manifest, None)
        verification = session.history.verification(manifest.id)
        pruned = prune_in(session, keep=ctx.config.backups.retention)
    return BackupRun(manifest, verification, tuple(pruned))


def create(
    ctx: StepContext, *, environment: str, reason: str = "manual", verify: bool = False
) -> BackupManifest:
    """Take a backup of `environment`'s database into its store.

    :param ctx: the step context.
    :param environment: the environment's name in deploy.toml.
    :param reason: why it was taken (manual, pre-deploy, pre-restore), kept in the manifest.
    :param verify: verify it while it is taken (see `create_in`); CheckFailed when it fails.
    """
    with open_environment(ctx, environment) as session:
        return create_in(session, reason=reason, verify=verify)


def create_in(
    session: EnvSession,
    *,
    reason: str = "manual",
    verify: bool = False,
    source: str | None = None,
    origin: Origin | None = None,
) -> BackupManifest:
    """`create` within an open environment (a deploy calls it under its lock).

    With `verify`, the dump is verified in the same pass: the stream pg_dump writes goes into
    the store (its sha256 computed on the way) and, at the same time, into pg_restore loading a
    scratch database; once both ended, the scratch database must have the row counts of the
    dump's snapshot, and the stored file must be the size streamed and read by
    `pg_restore --list`. Only then are the manifest and a passed verification written: a
    backup that fails any of it is not kept (its file and the scratch database are removed).

    `source` dumps another database of the same server (a database a restore replaced, kept
    under its own name) as a backup of the service's database; `origin` then says which
    release and image it belonged to (default: what runs now).
    """
    db = Database.of(session.platform)
    src = db if source is None else dataclasses.replace(db, name=source)
    history = session.history
    size = src.size_bytes()
    free = session.store.free_bytes()
    if free < 2 * size:
        raise DeployError(
            f"the backup store {session.store.description} has {human_size(free)} free, less than "
            f"twice the database's {human_size(size)}",
            untouched="no backup was taken; the database and the store are as they were",
            hint="free space in the store (`deploytools backup prune`) or enlarge it",
            facts={"free_bytes": free, "database_bytes": size},
        )
    backup_id = history.new_backup_id()
    verifying = " and test-restoring" if verify else ""
    session.progress(
        f"backup {backup_id}: dumping{verifying} {src.name} ({human_size(size)} on disk)"
    )
    if origin is None:
        origin = current_origin(session)
    started = time.monotonic()
    next_report = PROGRESS_EVERY
    scratch = f"{db.name}{VERIFY_SCRATCH}{secrets.token_hex(3)}" if verify else None
    if scratch is not None:
        _drop_left_scratch(session, db)
    path = history.backup_file(backup_id)
    kept = False

    def on_bytes(done: int) -> None:
        nonlocal next_report
        if done >= next_report:
            session.progress(f"backup {backup_id}: {human_size(done)} written")
            next_report += PROGRESS_EVERY

    try:
        with src.snapshot() as snapshot:
            revision = src.revision()
            counts = src.row_counts(snapshot=snapshot)
            if scratch is not None:
                db.create_database(scratch)
                chunks, dump_result = src.dump_and_restore(scratch, snapshot=snapshot)
            else:
                chunks, dump_result = src.dump(snapshot=snapshot)

            def checked() -> Iterator[bytes]:
                yield from chunks
                # The stream ended: the exit code decides whether it ended complete (and the
                # test restore with it), before the store renames the file to its real name.
                result = dump_result()
                if result.exit_code != 0:
                    raise _dump_failure(db, result, verified=scratch is not None)
                if scratch is not None:
                    _check_restored_counts(db, scratch, counts)

            streamed = session.store.write_stream(path, checked(), on_bytes=on_bytes)
        kept = True
        if scratch is not None:
            _check_stored(session, backup_id, path, streamed.size)
        volumes = {
            name: snapshot_volume(session, backup_id, name)
            for name in session.ctx.config.backups.volumes
        }
    except DeployError as error:
        # The database went away, or the engine, mid-dump; or the dump did not verify.
        if kept:
            with contextlib.suppress(DeployError):
                history.remove_backup(backup_id)
        left = _drop_scratch(db, scratch)
        error.message = f"the backup of environment {session.platform.name} failed: {error.message}"
        error.untouched = (
            error.untouched
            or (
                "no backup was kept (the partial file"
                + (" and the scratch database were" if scratch and not left else " was")
                + " removed); the database was only read"
            )
        ) + left
        error.hint = error.hint or "check that the database runs (`deploytools status`); retry"
        raise
    except BaseException:
        _drop_scratch(db, scratch)
        raise
    _drop_scratch(db, scratch)
    manifest = BackupManifest(
        id=backup_id,
        environment=session.platform.name,
        created=utc_now(),
        database=db.name,
        release=origin.release,
        image=origin.image,
        version=origin.version,
        revision=revision,
        size=streamed.size,
        sha256=streamed.sha256,
        pg_dump_version=db.pg_dump_version(),
        row_counts=counts,
        file=session.store.path(path),
        reason=reason,
        volumes=volumes,
    )
    if scratch is not None:
        try:
            verify_volumes(session, manifest)  # sha256 and tar listing of each volume archive
        except CheckFailed as error:
            with contextlib.suppress(DeployError):
                history.remove_backup(backup_id)
            error.message = (
                f"the backup of environment {session.platform.name} failed: {error.message}"
            )
            error.untouched = "no backup was kept; the database was only read"
            raise
    # The manifest is what makes a backup exist: written last, so a dump without one is never
    # offered (list and restore only see backups with a manifest).
    history.save_manifest(manifest)
    if scratch is not None:
        history.save_verification(
            Verification(
                backup_id=backup_id,
                verified=utc_now(),
                ok=True,
                sha256_ok=True,
                listed_ok=True,
                restore_ok=True,
                row_counts_ok=True,
                detail=VERIFIED_WHILE_DUMPING,
            )
        )
    if session.ctx.config.backups.copy_to:
        manifest = copies.copy(session, manifest)
    elapsed = time.monotonic() - started
    session.progress(
        f"backup {backup_id}: complete{', verified' if scratch else ''}, "
        f"{human_size(streamed.size)} in {elapsed:.1f} s, "
        f"{sum(counts.values())} rows in {len(counts)} tables, revision {revision or 'none'}"
    )
    return manifest


#: The middle of a test restore's scratch database name: <database>__dtverify_<random>.
VERIFY_SCRATCH = "__dtverify_"


def _drop_scratch(db: Database, scratch: str | None) -> str:
    """Drop the scratch database `scratch` (if any); "" when done, else what is left."""
    if scratch is not None:
        try:
            db.drop_database(scratch)
        except DeployError:
            # The server went away: the next verified backup (or verify) drops it.
            return f"; the scratch database {scratch} is left until the next backup drops it"
    return ""


def _drop_left_scratch(session: EnvSession, db: Database) -> None:
    """Drop the scratch databases of test restores whose server went away midway (no session
    uses them: a test restore running now always has one)."""
    for name in db.drop_unused(db.name + VERIFY_SCRATCH):
        session.progress(f"dropped the scratch database {name}, left by an interrupted verify")


#: A verification's detail when the backup was verified in the pass that took it.
VERIFIED_WHILE_DUMPING = (
    "verified while dumping: sha256 of the stream stored, pg_restore --list of the stored file, "
    "test restore of the same stream, row counts of the snapshot"
)


def _dump_failure(db: Database, result: ExecResult, *, verified: bool) -> DeployError:
    """The error for a dump (with its test restore when `verified`) that did not exit 0."""
    if verified and result.exit_code == pg.RESTORE_FAILED and db.reachable():
        # pg_dump wrote the whole stream and the server still answers: the archive itself
        # does not restore.
        return CheckFailed(
            f"the test restore failed: {result.error_line()}",
            hint="a dump that does not restore is of no use: fix what pg_restore reports "
            "(a role or an extension the archive needs, for one) and take the backup again",
            facts={"exit_code": result.exit_code},
        )
    what = "pg_dump and its test restore" if verified else "pg_dump"
    return ExternalCommandFailed(
        f"{what} failed in {db.container.name} (exit {result.exit_code}): {result.error_line()}",
        hint="check the database container's logs and retry",
        facts={"exit_code": result.exit_code},
    )


def _check_restored_counts(db: Database, scratch: str, counts: dict[str, int]) -> None:
    restored = db.row_counts(database=scratch)
    differences = table_differences(restored, counts)
    if differences:
        raise CheckFailed(
            "the test restore has other row counts than the dump's snapshot: "
            + ", ".join(f"{t} {d:+d}" for t, d in sorted(differences.items())),
            facts={"differences": differences},
        )


def _check_stored(session: EnvSession, backup_id: str, path: str, size: int) -> None:
    """The file in the store is whole (the size streamed) and pg_restore reads it."""
    stored = session.store.size(path)
    if stored != size:
        raise CheckFailed(
            f"the store holds {stored} bytes of backup {backup_id}, {size} were streamed",
            facts={"stored": stored, "streamed": size},
        )
    result = _list_archive(session, session.store.path(path))
    if result.exit_code != 0:
        raise CheckFailed(
            f"pg_restore cannot read the stored backup {backup_id}: {result.error_line()}",
            facts={"exit_code": result.exit_code},
        )


#: The exit codes of an exec whose program is not in the image (not found, not executable).
_NO_SUCH_PROGRAM = (126, 127)


def _list_archive(session: EnvSession, path: str) -> ExecResult:
    """`pg_restore --list` of the archive at `path` in the store's helper. A helper image
    without pg_restore (no database container existed when the store was opened, so it runs
    another image) says nothing about the backup: an ExternalCommandFailed, never a verdict."""
    result = session.store.run(pg.pg_restore_list(path))
    if result.exit_code in _NO_SUCH_PROGRAM:
        raise ExternalCommandFailed(
            "pg_restore cannot run in the backup store's helper (image "
            f"{session.store.container.image_id[:19]}), so the backup could not be verified: "
            f"{result.error_line()}",
            hint="start the database service (its image has pg_restore) and retry",
            facts={"exit_code": result.exit_code},
        )
    return result


# -- verify ----------------------------------------------------------------------------------------


def verify(ctx: StepContext, *, environment: str, backup_id: str) -> Verification:
    """Verify one backup: sha256, `pg_restore --list`, a test restore with the manifest's row
    counts. Raises CheckFailed when it fails (the verification is recorded either way).

    :param environment: the environment's name.
    :param backup_id: the backup's id (see `backup list`).
    """
    with open_environment(ctx, environment) as session:
        return verify_in(session, backup_id)


def verify_copies(ctx: StepContext, *, environment: str, backup_id: str) -> list[dict[str, Any]]:
    """Verify the backup's off-host copies ([backups] copy_to): each copy's sha256 as recorded
    and, decrypted, its content's. Raises CheckFailed when one does not match."""
    with open_environment(ctx, environment) as session:
        manifest = session.history.manifest(backup_id)
    return copies.verify(manifest, ctx.config.backups)


def verify_in(session: EnvSession, backup_id: str) -> Verification:
    manifest = session.history.manifest(backup_id)
    checks = {"sha256_ok": False, "listed_ok": False, "restore_ok": False, "row_counts_ok": False}
    detail = "ok"
    try:
        _check_file(session, manifest)
        checks["sha256_ok"] = True
        _check_listing(session, manifest)
        verify_volumes(session, manifest)  # sha256 and tar listing of each volume archive
        checks["listed_ok"] = True
        db = Database.of(session.platform)
        _drop_left_scratch(session, db)
        scratch = f"{db.name}{VERIFY_SCRATCH}{secrets.token_hex(3)}"
        session.progress(f"verify {backup_id}: test restore into scratch database {scratch}")
        try:
            db.create_database(scratch)
            try:
                _restore_stream(session, db, manifest, scratch)
            except ExternalCommandFailed as failed:
                raise CheckFailed(f"the test restore failed: {failed.message}") from failed
            checks["restore_ok"] = True
            restored = db.row_counts(database=scratch)
        finally:
            with contextlib.suppress(DeployError):
                db.drop_database(scratch)
        differences = table_differences(restored, manifest.row_counts)
        if differences:
            raise CheckFailed(
                f"backup {backup_id} restores with other row counts than its manifest: "
                + ", ".join(f"{t} {d:+d}" for t, d in sorted(differences.items())),
                facts={"differences": differences},
            )
        checks["row_counts_ok"] = True
    except CheckFailed as error:
        # The backup itself is bad: record it, so list, deploy and retention know.
        verification = Verification(
            backup_id=backup_id, verified=utc_now(), ok=False, detail=error.message, **checks
        )
        with contextlib.suppress(DeployError):
            session.history.save_verification(verification)
        error.message = f"backup {backup_id} failed verification: {error.message}"
        error.untouched = error.untouched or "the backup and the database were left as they were"
        error.hint = error.hint or "take a new backup (`deploytools backup create`)"
        error.facts.update({"backup_id": backup_id, **checks})
        raise
    # Any other DeployError (the database or the engine went away) says nothing about the
    # backup: it propagates as it is and no verdict is recorded.
    verification = Verification(
        backup_id=backup_id, verified=utc_now(), ok=True, detail=detail, **checks
    )
    session.history.save_verification(verification)
    session.progress(
        f"verify {backup_id}: ok (sha256, pg_restore --list, test restore, "
        f"{manifest.total_rows} rows in {len(manifest.row_counts)} tables)"
    )
    return verification


def _check_file(session: EnvSession, manifest: BackupManifest) -> None:
    path = session.history.backup_file(manifest.id)
    if not session.store.exists(path):
        raise CheckFailed(f"the file of backup {manifest.id} is missing from the store")
    actual = session.store.sha256(path)
    if actual != manifest.sha256:
        raise CheckFailed(
            f"backup {manifest.id} is corrupted: its sha256 is {actual[:16]}..., "
            f"the manifest says {manifest.sha256[:16]}...",
            facts={"expected": manifest.sha256, "actual": actual},
        )


def _check_listing(session: EnvSession, manifest: BackupManifest) -> None:
    path = session.store.path(session.history.backup_file(manifest.id))
    result = _list_archive(session, path)
    if result.exit_code != 0:
        raise CheckFailed(
            f"pg_restore cannot read backup {manifest.id}: {result.error_line()}",
            facts={"exit_code": result.exit_code},
        )


def _restore_stream(
    session: EnvSession, db: Database, manifest: BackupManifest, database: str
) -> None:
    chunks, read_result = session.store.read_stream(session.history.backup_file(manifest.id))
    db.restore_into(database, chunks)
    result = read_result()
    if result.exit_code != 0:
        raise ExternalCommandFailed(f"reading backup {manifest.id} failed: {result.error_line()}")


def table_differences(current: dict[str, int], backup: dict[str, int]) -> dict[str, int]:
    """Per table, current rows minus the backup's rows, for tables where they differ."""
    tables = set(current) | set(backup)
    diffs = {t: current.get(t, 0) - backup.get(t, 0) for t in tables}
    return {t: d for t, d in diffs.items() if d}


def rows_dropped(current: dict[str, int], backup: dict[str, int]) -> int:
    """How many row changes a restore of `backup` would undo, counted as row-count differences
    (an update that leaves counts equal is not seen: it is a lower bound)."""
    return sum(abs(d) for d in table_differences(current, backup).values())


# -- list ------------------------------------------------------------------------------------------


def list_backups(ctx: StepContext, *, environment: str) -> BackupListing:
    """The environment's backups, oldest first, with their last verification."""
    with open_environment(ctx, environment, read_only=True) as session:
        manifests = session.history.manifests()
        return BackupListing(
            environment=environment,
            store=ctx.config.backups.store,
            backups=tuple(manifests),
            verifications={m.id: session.history.verification(m.id) for m in manifests},
            kept_databases=tuple(_kept_or_none(session)),
        )


def _kept_or_none(session: EnvSession) -> list[str]:
    """`kept_databases`, or none when the database cannot be asked (the list still shows)."""
    try:
        return kept_databases(Database.of(session.platform))
    except DeployError:
        return []


#: The reason of a safety backup: the data a restore replaced, not what serves after it.
SAFETY_REASON = "pre-restore of "


def ensure_pre_deploy(
    session: EnvSession, current: ReleaseRecord | None, no_backup_check: bool
) -> str | None:
    """The deploy's backup, on every platform: a verified backup taken after the current
    release started, or one taken and verified now (pruned to the retention); None when it
    failed and `no_backup_check` lets the deploy go on without one."""
    since = (current.finished or current.started) if current else None
    found = latest_verified(session, since=since)
    if found is not None:
        session.progress(f"backup: using verified backup {found.id} ({found.created})")
        return found.id
    try:
        manifest = create_in(session, reason="pre-deploy", verify=True)
    except DeployError:
        if no_backup_check:
            session.progress("backup: failed; going on without one (--no-backup-check)")
            return None
        raise
    prune_in(session, keep=session.ctx.config.backups.retention)
    return manifest.id


def latest_verified(session: EnvSession, *, since: str | None = None) -> BackupManifest | None:
    """The newest backup whose last verification passed (taken at or after `since`) and that
    holds the service's data: a safety backup holds the data a restore replaced (taken after
    the swap), never what serves now, so it is not one."""
    for manifest in reversed(session.history.manifests()):
        if since is not None and manifest.created < since:
            return None
        if manifest.reason.startswith(SAFETY_REASON):
            continue
        verification = session.history.verification(manifest.id)
        if verification is not None and verification.ok:
            return manifest
    return None


# -- restore ---------------------------------------------------------------------------------------


def restore(
    ctx: StepContext,
    *,
    environment: str,
    backup_id: str,
    lock_wait_s: float = 0.0,
    confirm: Callable[[str], bool] | None = None,
) -> RestoreResult:
    """Replace `environment`'s database with backup `backup_id`, under the deploy lock.

    The backup is restored into a scratch database and checked against its manifest; only then
    does it take the service database's name (the app is stopped for the swap and started
    again). The database it replaces is renamed, not dropped; a verified safety backup of it is
    taken next, and only then is it dropped (kept, with a warning, if that backup fails).

    :param confirm: asked first, with how many rows differ from the backup (the writes a
        restore undoes); False cancels with nothing done. None: not asked.
    """
    with open_environment(ctx, environment) as session:
        if confirm is not None:
            manifest = session.history.manifest(backup_id)
            dropped = rows_dropped(Database.of(session.platform).row_counts(), manifest.row_counts)
            question = (
                f"Replace the database of {environment} with backup {backup_id} "
                f"({manifest.created}, revision {manifest.revision or 'none'})? "
                f"{dropped} rows differ from it and would be lost (the current database is "
                "kept until a verified safety backup of it exists)"
            )
            if not confirm(question):
                raise UsageError(
                    f"the restore of {backup_id} into {environment} was cancelled",
                    untouched="nothing was done",
                )
        ttl = ctx.config.deploy.lock_ttl_s
        with session.history.locked("restore", ttl_s=ttl, wait_s=lock_wait_s) as lock:
            session.lock = lock
            return restore_in(session, backup_id, restart_app=True)


def restore_in(
    session: EnvSession,
    backup_id: str,
    *,
    restart_app: bool,
    secure: bool = True,
    current_counts: dict[str, int] | None = None,
) -> RestoreResult:
    """`restore` within an open, locked environment: `prepare_restore`, `swap_in`, and unless
    `secure` is False, `secure_replaced`.

    :param restart_app: stop the app for the swap and start it again.
    :param secure: take the safety backup of the replaced database (and drop it) before
        returning; False leaves that to the caller (`secure_replaced`).
    :param current_counts: the database's row counts, when the caller just counted them (a
        full scan of every table saved).
    """
    prepared = prepare_restore(session, backup_id, current_counts=current_counts)
    result = swap_in(session, prepared, restart_app=restart_app)
    if not secure:
        return result
    return secure_replaced(session, result, origin=prepared.origin)


@dataclass(frozen=True)
class PreparedRestore:
    """A backup restored into the scratch database `scratch` and checked, not swapped in yet."""

    manifest: BackupManifest
    scratch: str
    origin: Origin
    rows_dropped: int
    table_differences: dict[str, int]
    revision_before: str | None


def prepare_restore(
    session: EnvSession, backup_id: str, *, current_counts: dict[str, int] | None = None
) -> PreparedRestore:
    """Check backup `backup_id` and restore it into a new scratch database, checked against
    its manifest's row counts. The service's database is only read (the app may keep serving);
    `swap_in` then puts it in place, or `discard` drops it."""
    manifest = session.history.manifest(backup_id)
    # Refuse a damaged backup before anything changes.
    try:
        _check_file(session, manifest)
        _check_listing(session, manifest)
        verify_volumes(session, manifest)
    except CheckFailed as error:
        error.untouched = "the database was not touched"
        error.hint = "restore another backup (`deploytools backup list`)"
        raise
    db = Database.of(session.platform)
    if current_counts is None:
        current_counts = db.row_counts()
    differences = table_differences(current_counts, manifest.row_counts)
    dropped = rows_dropped(current_counts, manifest.row_counts)
    revision_before = db.revision()
    session.progress(
        f"restore {backup_id}: the database differs from the backup by {dropped} rows"
        + (
            ": " + ", ".join(f"{t} {d:+d}" for t, d in sorted(differences.items()))
            if dropped
            else ""
        )
    )
    origin = current_origin(session)
    scratch = f"{db.name}__dtrestore_{secrets.token_hex(3)}"
    try:
        _restore_scratch(session, db, manifest, scratch)
    except BaseException:
        with contextlib.suppress(DeployError):
            db.drop_database(scratch)
        raise
    session.refresh_lock()
    return PreparedRestore(manifest, scratch, origin, dropped, differences, revision_before)


def discard(session: EnvSession, prepared: PreparedRestore) -> None:
    """Drop a prepared restore's scratch database (best effort: the service's is untouched)."""
    with contextlib.suppress(DeployError):
        Database.of(session.platform).drop_database(prepared.scratch)


def swap_in(session: EnvSession, prepared: PreparedRestore, *, restart_app: bool) -> RestoreResult:
    """The prepared scratch database takes the service database's name; the database it
    replaces is kept under another name (renamed, not dropped) until `secure_replaced` has a
    verified backup of it. With `restart_app` the app is stopped for the swap and started
    again; without, the caller has stopped it."""
    manifest, scratch = prepared.manifest, prepared.scratch
    db = Database.of(session.platform)
    # The very release that ran is stopped and started again (not `compose up`, which would
    # recreate it from the Compose file's current variables).
    app_service = session.ctx.config.project.app_service
    paused = (
        session.platform.paused(app_service, what=f"stopping {app_service} for the restore")
        if restart_app
        else contextlib.nullcontext()
    )
    kept = f"{db.name}{SAFETY_KEPT}{secrets.token_hex(3)}"
    with paused:
        try:
            db.replace_with(scratch, keep_as=kept)
        except BaseException:
            with contextlib.suppress(DeployError):
                db.drop_database(scratch)
            raise
        session.progress(
            f"restore {manifest.id}: restored; the replaced database is kept as {kept} until "
            "its safety backup is verified"
        )
        # The files go back with the rows that point to them (with the app stopped, if asked).
        restore_volumes(session, manifest)
    revision_after = db.revision()
    session.progress(f"restore {manifest.id}: done, revision {revision_after or 'none'}")
    return RestoreResult(
        environment=session.platform.name,
        backup_id=manifest.id,
        safety_backup_id=None,
        rows_dropped=prepared.rows_dropped,
        table_differences=prepared.table_differences,
        revision_before=prepared.revision_before,
        revision_after=revision_after,
        kept_database=kept,
    )


#: The middle of the name a database replaced by a restore keeps until a verified safety backup
#: of it exists: <database>__dtsafety_<random>. Scratch clean-up (VERIFY_SCRATCH) never
#: matches it.
SAFETY_KEPT = "__dtsafety_"


def secure_replaced(
    session: EnvSession, restored: RestoreResult, *, origin: Origin | None = None
) -> RestoreResult:
    """Take the verified safety backup of the database `restored` replaced (kept under
    `restored.kept_database`), then drop it. If the backup fails, the database is kept and the
    result says why (`safety_error`): nothing is dropped without a verified backup of it.

    :param origin: the release and image the replaced data belonged to (default: what runs
        now, which after a rollback is the older release: pass what ran before the restore).
    """
    kept = restored.kept_database
    if kept is None:
        return restored
    db = Database.of(session.platform)
    try:
        safety = create_in(
            session,
            reason=f"{SAFETY_REASON}{restored.backup_id}",
            verify=True,
            source=kept,
            origin=origin,
        )
    except DeployError as error:
        message = (
            f"the safety backup of the replaced database failed: {error.message}. The data "
            f"from before the restore is kept in database {kept}; take its backup again with "
            f"`deploytools backup secure --env {session.platform.name} {kept}`, or drop it by "
            f'hand (psql -c "DROP DATABASE {kept}") once it is not needed'
        )
        session.progress(f"warning: {message}")
        return dataclasses.replace(restored, safety_error=message)
    try:
        db.drop_database(kept)
    except DeployError as error:
        message = (
            f"safety backup {safety.id} verified, but the replaced database {kept} could not be "
            f"dropped ({error.message}); drop it by hand once it is not needed"
        )
        session.progress(f"warning: {message}")
        return dataclasses.replace(restored, safety_backup_id=safety.id, safety_error=message)
    session.progress(f"safety backup {safety.id} verified; dropped the replaced database {kept}")
    return dataclasses.replace(restored, safety_backup_id=safety.id, kept_database=None)


def kept_databases(db: Database) -> list[str]:
    """The databases replaced by a restore and kept because no verified safety backup of them
    exists yet."""
    return db.query(pg.databases_named_sql(db.name + SAFETY_KEPT), database="postgres").split()


def _restore_scratch(
    session: EnvSession, db: Database, manifest: BackupManifest, scratch: str
) -> None:
    """Restore `manifest`'s backup into the new database `scratch` and check its row counts."""
    session.progress(f"restore {manifest.id}: restoring into {scratch}")
    db.create_database(scratch)
    _restore_stream(session, db, manifest, scratch)
    restored = db.row_counts(database=scratch)
    if table_differences(restored, manifest.row_counts):
        raise CheckFailed(
            f"backup {manifest.id} restored with other row counts than its manifest",
            untouched="the service's database was not touched",
        )


def secure(ctx: StepContext, *, environment: str, database: str) -> RestoreResult:
    """Take the verified safety backup of `database`, a database a restore replaced and kept
    (its name contains SAFETY_KEPT), then drop it; under the deploy lock."""
    with open_environment(ctx, environment) as session:
        db = Database.of(session.platform)
        if database not in kept_databases(db):
            raise UsageError(
                f"{database} is not a database kept by a restore in environment {environment}",
                untouched="nothing was done",
                hint="`deploytools backup list` names the kept databases",
            )
        ttl = ctx.config.deploy.lock_ttl_s
        with session.history.locked("restore", ttl_s=ttl) as lock:
            session.lock = lock
            result = RestoreResult(
                environment=environment,
                backup_id=database,
                safety_backup_id=None,
                rows_dropped=0,
                table_differences={},
                revision_before=None,
                revision_after=None,
                kept_database=database,
            )
            secured = secure_replaced(session, result, origin=Origin(None, None, None))
            if secured.safety_backup_id is None:
                raise DeployError(
                    secured.safety_error or f"the backup of {database} failed",
                    untouched=f"the database {database} is kept",
                )
            return secured


# -- retention -------------------------------------------------------------------------------------


def prune_in(session: EnvSession, *, keep: int) -> list[str]:
    """Delete old backups: keep the newest `keep` verified ones, every backup newer than the
    oldest of those (they may not be verified yet), and the one the newest release record
    points to. Returns the ids deleted."""
    manifests = list(reversed(session.history.manifests()))  # newest first
    records = session.history.releases()
    pinned = {r.backup_id for r in records[-1:] if r.backup_id}
    verified_seen = 0
    deleted = []
    for manifest in manifests:
        verification = session.history.verification(manifest.id)
        is_verified = verification is not None and verification.ok
        if verified_seen < keep:
            verified_seen += is_verified
            continue
        if manifest.id in pinned:
            continue
        session.history.remove_backup(manifest.id)
        deleted.append(manifest.id)
    if deleted:
        session.progress(f"retention: deleted {len(deleted)} old backups")
    return deleted


def prune(ctx: StepContext, *, environment: str) -> list[str]:
    with open_environment(ctx, environment) as session:
        return prune_in(session, keep=ctx.config.backups.retention)


# -- helpers ---------------------------------------------------------------------------------------


def _app_image(target: Platform) -> tuple[str, str | None] | None:
    """The running app container's image and version label, if one runs."""
    for container in target.containers(target.config.project.app_service):
        if container.status == "running":
            image = container.attrs.get("Config", {}).get("Image", "")
            return image, container.labels.get(VERSION_LABEL)
    return None
