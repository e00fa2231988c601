"""Off-host copies of backups ("store the backup location securely").

`[backups] copy_to = "dir:/path"` copies every new backup (its dump, its volume archives and its
manifest) from the store on the target to a directory where deploytools runs: in GitHub Actions
a directory the job uploads as an artifact, so a copy survives the target host. With
`encryption_key_env` naming a variable that holds a Fernet key (`cryptography`: AES-128-CBC with
HMAC-SHA256, authenticated; `Fernet.generate_key()`), the copies are encrypted at rest; nothing
here is a home-made cipher. The manifest in the store records each copy's location, its sha256
(of the bytes at rest) and whether it is encrypted; `backup verify --remote` re-reads the copies,
checks those checksums and, decrypting with the key, that the content is the backup's own.

A Fernet token is made in one piece, so an encrypted copy holds one file in memory while it is
made or verified; unencrypted copies are streamed. ENCRYPTED_LIMIT bounds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken

from deploytools import volumes
from deploytools.errors import CheckFailed, ExternalCommandFailed, UsageError

if TYPE_CHECKING:
    from deploytools.config import BackupConfig
    from deploytools.history import BackupManifest
    from deploytools.steps.backup import EnvSession

#: The largest file copied encrypted (it is held in memory once while encrypting).
ENCRYPTED_LIMIT = 2 * 1024**3
_SUFFIX = ".fernet"


def _key(config: BackupConfig, environ: Mapping[str, str]) -> Fernet | None:
    if not config.encryption_key_env:
        return None
    value = environ.get(config.encryption_key_env, "").strip()
    if not value:
        raise UsageError(
            f"backups.encryption_key_env names {config.encryption_key_env}, which is not set",
            untouched="the backup stays in the store; no copy was made or checked",
            hint="set it to a Fernet key (python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'), kept as a secret",
        )
    try:
        return Fernet(value.encode())
    except ValueError:
        raise UsageError(
            f"{config.encryption_key_env} does not hold a Fernet key (32 url-safe base64 bytes)",
            untouched="the backup stays in the store; no copy was made or checked",
        ) from None


def directory(config: BackupConfig) -> Path:
    return Path(config.copy_to.removeprefix("dir:"))


def _files(session: EnvSession, manifest: BackupManifest) -> list[tuple[str, str, str]]:
    """(what, path in the store, the sha256 the manifest gives it) of every file of a backup."""
    env = session.target.name
    found = [("dump", session.history.backup_file(manifest.id), manifest.sha256)]
    for name, snap in sorted(manifest.volumes.items()):
        found.append(
            (f"volume {name}", volumes.archive_file(env, manifest.id, name), str(snap["sha256"]))
        )
    return found


def copy(
    session: EnvSession, manifest: BackupManifest, *, environ: Mapping[str, str] | None = None
) -> BackupManifest:
    """Copy the backup to copy_to; the manifest with its copies, saved in the store."""
    config = session.ctx.config.backups
    fernet = _key(config, os.environ if environ is None else environ)
    where = directory(config) / session.target.name
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    copies: list[dict[str, Any]] = []
    for what, path, expected in _files(session, manifest):
        name = Path(path).name + (_SUFFIX if fernet else "")
        target = where / name
        chunks, result = session.store.read_stream(path)
        plain = hashlib.sha256()
        stored = hashlib.sha256()
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            if fernet is None:
                for chunk in chunks:
                    plain.update(chunk)
                    stored.update(chunk)
                    out.write(chunk)
            else:
                data = b"".join(_bounded(chunks, what))
                plain.update(data)
                token = fernet.encrypt(data)
                stored.update(token)
                out.write(token)
        if result().exit_code != 0 or plain.hexdigest() != expected:
            tmp.unlink(missing_ok=True)
            raise ExternalCommandFailed(
                f"copying the {what} of backup {manifest.id} to {where} failed: it did not read "
                "back whole with its sha256",
                untouched=f"backup {manifest.id} stays in the store; no copy of it was kept",
                hint="verify the backup (`deploytools backup verify`) and retry",
            )
        tmp.replace(target)
        copies.append(
            {
                "file": what,
                "location": f"dir:{target}",
                "sha256": stored.hexdigest(),
                "content_sha256": expected,
                "encrypted": fernet is not None,
            }
        )
    updated = dataclasses.replace(manifest, copies=copies)
    # The manifest travels with the copy, so the artifact says what it holds.
    (where / f"{manifest.id}.json").write_text(
        json.dumps(dataclasses.asdict(updated), indent=2, sort_keys=True), encoding="utf-8"
    )
    session.history.save_manifest(updated)
    session.progress(
        f"backup {manifest.id}: copied to {where} ({len(copies)} files"
        + (", encrypted)" if fernet else ")")
    )
    return updated


def _bounded(chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > ENCRYPTED_LIMIT:
            raise UsageError(
                f"the {what} is over {ENCRYPTED_LIMIT} bytes, too big to encrypt in one piece",
                untouched="the backup stays in the store; no copy of it was kept",
                hint="copy it unencrypted to an encrypted filesystem, or raise the limit",
            )
        yield chunk


def verify(
    manifest: BackupManifest, config: BackupConfig, *, environ: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Re-read every copy of the backup: its sha256 at rest, and (decrypted) its content's.
    CheckFailed naming the first copy that is missing or differs."""
    if not manifest.copies:
        raise UsageError(
            f"backup {manifest.id} has no off-host copy recorded",
            untouched="nothing was checked",
            hint="set [backups] copy_to and take a backup, or verify without --remote",
        )
    env = os.environ if environ is None else environ
    checked = []
    for entry in manifest.copies:
        path = Path(str(entry["location"]).removeprefix("dir:"))
        if not path.is_file():
            raise CheckFailed(
                f"the copy of the {entry['file']} of backup {manifest.id} is gone: {path}"
            )
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CheckFailed(
                f"the copy {path} of backup {manifest.id} is corrupted: its sha256 differs from "
                "the one recorded when it was made",
                facts={"copy": str(path)},
            )
        if entry.get("encrypted"):
            fernet = _key(config, env)
            if fernet is None:
                raise UsageError(
                    f"the copy {path} is encrypted; set backups.encryption_key_env to check it",
                    untouched="nothing was changed",
                )
            try:
                data = fernet.decrypt(data)
            except InvalidToken:
                raise CheckFailed(
                    f"the copy {path} does not decrypt with the key in "
                    f"{config.encryption_key_env} (another key, or altered)"
                ) from None
        if hashlib.sha256(data).hexdigest() != entry["content_sha256"]:
            raise CheckFailed(f"the copy {path} does not hold the {entry['file']} of the backup")
        checked.append({**entry, "ok": True})
    return checked
