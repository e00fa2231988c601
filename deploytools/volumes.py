"""Filesystem snapshots of the stack's named volumes (runbook Step 4, "uploads" and the like).

`[backups] volumes = ["uploads"]` names Compose volumes of the stack. `backup create` streams
each as a tar archive into the store beside the database dump: `tar -c` runs in a short-lived
container of the store helper's image (already on the engine, nothing is pulled) with the volume
mounted read-only, and its stdout goes through the store's write_stream, which computes the
sha256 on the way. The manifest keeps, per volume, the file, size, sha256 and the number of tar
entries. `backup verify` checks both (a damaged archive is a failed verification), and `backup
restore` (so a rollback that restores) refuses a damaged archive before anything changes, then
empties each volume and extracts its archive into it, after the database.

The volume is read while the app runs: files written during the tar may or may not be in it, as
with any online file copy; a deploy's backup is taken before the app is stopped.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

from deploytools.engine.client import PROJECT_LABEL, VOLUME_LABEL, Container, Mount, OneOff
from deploytools.engine.errors import EngineError
from deploytools.errors import (
    CheckFailed,
    EnvironmentUnreachable,
    ExternalCommandFailed,
    UsageError,
)
from deploytools.session import EnvSession
from deploytools.store.files import HELPER_LABEL
from deploytools.store.records import BackupManifest

#: Where a helper mounts the volume.
MOUNT = "/volume"
#: A volume helper's own deadline: it removes itself even if deploytools is killed.
HELPER_LIFETIME_S = 2 * 3600


def archive_file(environment: str, backup_id: str, volume: str) -> str:
    return f"{environment}/backups/{backup_id}.volume-{volume}.tar"


def engine_volume(session: EnvSession, name: str) -> str:
    """The engine's name of the stack's Compose volume `name` (found by Compose's labels)."""
    target = session.target
    found = target.engine.volumes(
        labels=[f"{PROJECT_LABEL}={target.project}", f"{VOLUME_LABEL}={name}"]
    )
    if not found:
        raise UsageError(
            f'the stack {target.project} has no volume "{name}" ([backups] volumes)',
            untouched="no backup was taken",
            hint="name volumes of the Compose file (its top-level `volumes:`), or remove it",
            facts={"volume": name, "project": target.project},
        )
    return str(found[0].name)


@contextlib.contextmanager
def _mounted(session: EnvSession, volume: str, *, read_only: bool) -> Iterator[Container]:
    image = session.store.container.image_id
    try:
        container = session.target.engine.run(
            OneOff(
                image=image,
                entrypoint=["sleep", str(HELPER_LIFETIME_S)],
                command=[],
                name=f"{session.target.project}-volume-{secrets.token_hex(3)}",
                auto_remove=True,
                user="0",
                network_mode="none",
                mounts=[Mount(MOUNT, volume, read_only=read_only)],
                labels={HELPER_LABEL: "volume-helper"},
            )
        )
    except EngineError as exc:
        raise EnvironmentUnreachable(
            f"cannot mount volume {volume} in a helper container: {exc}",
            untouched="the volume was not touched",
            hint="check the engine (`deploytools status`)",
        ) from None
    try:
        yield container
    finally:
        with contextlib.suppress(EngineError):
            # volumes=True: the helper's image may declare a VOLUME (the PostgreSQL image does),
            # and its anonymous volume would otherwise stay behind on the engine after every
            # command.
            container.remove(force=True, volumes=True)


def _entries(session: EnvSession, path: str) -> int:
    result = session.store.run(["tar", "-tf", session.store.path(path)])
    if result.exit_code != 0:
        raise CheckFailed(f"tar cannot read {path}: {result.error_line()}")
    return len([line for line in result.text().splitlines() if line.strip()])


def snapshot(session: EnvSession, backup_id: str, name: str) -> dict[str, Any]:
    """Archive the stack's volume `name` into the store; what the manifest keeps of it."""
    volume = engine_volume(session, name)
    path = archive_file(session.platform.name, backup_id, name)
    session.progress(f"backup {backup_id}: snapshot of volume {volume}")
    with _mounted(session, volume, read_only=True) as helper:
        chunks, result = helper.exec_stream(["tar", "-C", MOUNT, "-cf", "-", "."])

        def checked() -> Iterator[bytes]:
            yield from chunks
            done = result()
            if done.exit_code != 0:
                raise ExternalCommandFailed(
                    f"tar of volume {volume} failed (exit {done.exit_code}): {done.error_line()}",
                    untouched="no backup was kept (the partial archive was removed)",
                )

        streamed = session.store.write_stream(path, checked())
    return {
        "volume": volume,
        "file": session.store.path(path),
        "size": streamed.size,
        "sha256": streamed.sha256,
        "entries": _entries(session, path),
    }


def verify(session: EnvSession, manifest: BackupManifest) -> None:
    """Every volume archive of the backup is there, has its sha256 and lists its entries;
    CheckFailed naming the first that does not."""
    for name, snap in sorted(manifest.volumes.items()):
        path = archive_file(session.platform.name, manifest.id, name)
        if not session.store.exists(path):
            raise CheckFailed(f"the archive of volume {name} of backup {manifest.id} is missing")
        actual = session.store.sha256(path)
        if actual != snap["sha256"]:
            raise CheckFailed(
                f"the archive of volume {name} of backup {manifest.id} is corrupted: its sha256 "
                f"is {actual[:16]}..., the manifest says {str(snap['sha256'])[:16]}...",
                facts={"volume": name, "expected": snap["sha256"], "actual": actual},
            )
        entries = _entries(session, path)
        if entries != snap["entries"]:
            raise CheckFailed(
                f"the archive of volume {name} lists {entries} entries, the manifest "
                f"{snap['entries']}"
            )


def restore(session: EnvSession, manifest: BackupManifest) -> list[str]:
    """Empty each volume of the backup and extract its archive into it (call `verify` first).
    Returns the engine's names of the volumes restored."""
    restored = []
    for name in sorted(manifest.volumes):
        volume = engine_volume(session, name)
        session.progress(f"restore {manifest.id}: volume {volume} from its archive")
        chunks, read_result = session.store.read_stream(
            archive_file(session.platform.name, manifest.id, name)
        )
        with _mounted(session, volume, read_only=False) as helper:
            result = helper.exec(
                ["sh", "-c", f"find {MOUNT} -mindepth 1 -delete && tar -C {MOUNT} -xf -"],
                stdin=chunks,
            )
        if result.exit_code != 0 or read_result().exit_code != 0:
            raise ExternalCommandFailed(
                f"restoring volume {volume} from backup {manifest.id} failed: "
                f"{result.error_line()}",
                untouched="the database was restored; the volume may be partly restored",
                hint=f"run `deploytools backup restore` of {manifest.id} again",
            )
        restored.append(volume)
    return restored
