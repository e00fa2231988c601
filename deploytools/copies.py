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
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploytools import volumes
from deploytools.config import BackupConfig
from deploytools.errors import (
    CheckFailed,
    EnvironmentUnreachable,
    ExternalCommandFailed,
    UsageError,
)
from deploytools.session import EnvSession
from deploytools.store.records import BackupManifest

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

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
    # Imported here, not at the top: `deploytools --help` must not load cryptography (start-up
    # time); only an encrypted copy needs it.
    from cryptography.fernet import Fernet

    try:
        return Fernet(value.encode())
    except ValueError:
        raise UsageError(
            f"{config.encryption_key_env} does not hold a Fernet key (32 url-safe base64 bytes)",
            untouched="the backup stays in the store; no copy was made or checked",
        ) from None


class _Directory:
    """copy_to = "dir:/path": files under PATH/ENV/, written under a temporary name first."""

    def __init__(self, root: str, environment: str) -> None:
        self.where = Path(root) / environment
        self.where.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.description = str(self.where)

    def staging(self, name: str) -> Path:
        return self.where / f"{name}.tmp"

    def commit(self, tmp: Path, name: str) -> str:
        tmp.replace(self.where / name)
        return f"dir:{self.where / name}"

    def put_text(self, name: str, text: str) -> None:
        (self.where / name).write_text(text, encoding="utf-8")

    def close(self) -> None:
        return None


class _S3:
    """copy_to = "s3://bucket/prefix" on AWS or an S3-compatible server (s3_endpoint_url);
    credentials from boto3's usual places (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)."""

    def __init__(self, url: str, endpoint_url: str, environment: str) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket = bucket
        self.prefix = "/".join(p for p in (prefix.strip("/"), environment) if p)
        self.client = s3_client(endpoint_url)
        self.spool = tempfile.TemporaryDirectory(prefix="deploytools-copy-")
        self.description = f"s3://{self.bucket}/{self.prefix}"

    def staging(self, name: str) -> Path:
        return Path(self.spool.name) / name

    def commit(self, tmp: Path, name: str) -> str:
        key = f"{self.prefix}/{name}"
        self.client.upload_file(str(tmp), self.bucket, key)
        tmp.unlink()
        return f"s3://{self.bucket}/{key}"

    def put_text(self, name: str, text: str) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=f"{self.prefix}/{name}", Body=text.encode("utf-8")
        )

    def close(self) -> None:
        self.spool.cleanup()


def s3_client(endpoint_url: str) -> Any:
    import boto3  # type: ignore[import-untyped]  # only when an S3 copy is configured

    return boto3.client("s3", endpoint_url=endpoint_url or None)


def _destination(config: BackupConfig, environment: str) -> _Directory | _S3:
    if config.copy_to.startswith("s3://"):
        return _S3(config.copy_to, config.s3_endpoint_url, environment)
    return _Directory(config.copy_to.removeprefix("dir:"), environment)


def _read(location: str, config: BackupConfig) -> bytes | None:
    """The bytes of a copy, None when it is gone."""
    if location.startswith("s3://"):
        bucket, _, key = location.removeprefix("s3://").partition("/")
        client = s3_client(config.s3_endpoint_url)
        try:
            return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except client.exceptions.NoSuchKey:
            return None
    path = Path(location.removeprefix("dir:"))
    return path.read_bytes() if path.is_file() else None


def _files(session: EnvSession, manifest: BackupManifest) -> list[tuple[str, str, str]]:
    """(what, path in the store, the sha256 the manifest gives it) of every file of a backup."""
    env = session.platform.name
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
    failures: tuple[type[Exception], ...] = (OSError, *_boto_errors())
    try:
        destination = _destination(config, session.platform.name)
        try:
            return _copy(session, manifest, destination, fernet)
        finally:
            destination.close()
    except failures as exc:
        raise ExternalCommandFailed(
            f"copying backup {manifest.id} to {config.copy_to} failed: {exc}",
            untouched=f"backup {manifest.id} stays in the store; its copy may be incomplete",
            hint="check the destination (a writable directory, or the bucket and credentials)",
        ) from None


def _boto_errors() -> tuple[type[Exception], ...]:
    try:
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
    except ImportError:
        return ()
    return (BotoCoreError, ClientError)


def _copy(
    session: EnvSession,
    manifest: BackupManifest,
    destination: _Directory | _S3,
    fernet: Fernet | None,
) -> BackupManifest:
    where = destination.description
    copies: list[dict[str, Any]] = []
    for what, path, expected in _files(session, manifest):
        name = Path(path).name + (_SUFFIX if fernet else "")
        chunks, result = session.store.read_stream(path)
        plain = hashlib.sha256()
        stored = hashlib.sha256()
        tmp = destination.staging(name)
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
        location = destination.commit(tmp, name)
        copies.append(
            {
                "file": what,
                "location": location,
                "sha256": stored.hexdigest(),
                "content_sha256": expected,
                "encrypted": fernet is not None,
            }
        )
    updated = dataclasses.replace(manifest, copies=copies)
    # The manifest travels with the copy, so the artifact says what it holds.
    destination.put_text(
        f"{manifest.id}.json", json.dumps(dataclasses.asdict(updated), indent=2, sort_keys=True)
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
    failures: tuple[type[Exception], ...] = (OSError, *_boto_errors())
    checked = []
    for entry in manifest.copies:
        path = str(entry["location"])
        try:
            data = _read(path, config)
        except failures as exc:
            raise EnvironmentUnreachable(
                f"cannot read the copy {path}: {exc}",
                untouched="nothing was changed",
                hint="check the destination and its credentials",
            ) from None
        if data is None:
            raise CheckFailed(
                f"the copy of the {entry['file']} of backup {manifest.id} is gone: {path}"
            )
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
            from cryptography.fernet import InvalidToken  # loaded by _key already

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
