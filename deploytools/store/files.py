"""The backup store: a named volume or a host directory on the target's engine.

The store lives with the target, not with the runner, so every runner (a laptop, a GitHub-hosted
job) sees the same backups, release records and lock, and a rollback or a database restore does
not touch them. We reach it through a short-lived helper container that mounts it, and `docker
exec` into that helper: small files are read with `cat` and written with a temporary name and a
rename; a dump is streamed through exec's stdin in chunks, so a 1 GB backup never sits in memory.

The helper runs the database's image (it is on the engine already, has sh, coreutils and the
server's own pg_restore), so nothing is pulled.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import posixpath
import secrets
import socket
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import docker.errors
import docker.types
import requests.exceptions
from docker.utils.socket import consume_socket_output, demux_adaptor, frames_iter

from deploytools.errors import EnvironmentUnreachable, ExternalCommandFailed

#: Where the helper mounts the store.
MOUNT = "/store"
#: The helper's own deadline: it removes itself even if deploytools is killed.
HELPER_LIFETIME_S = 6 * 3600
FALLBACK_HELPER_IMAGE = "debian:bookworm-slim"
HELPER_LABEL = "deploytools.role"
STDOUT = 1


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def error_line(self) -> str:
        lines = (self.stderr or self.stdout).decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "no output"


@contextlib.contextmanager
def _engine_errors(container_id: str, argv: list[str]) -> Iterator[None]:
    """The engine refusing an exec (the container stopped, was removed) or the connection to it
    breaking becomes one DeployError naming the container and the program."""
    try:
        yield
    except docker.errors.DockerException as exc:
        raise ExternalCommandFailed(
            f"running {argv[0]} in container {container_id[:12]} failed: "
            f"{getattr(exc, 'explanation', None) or exc}",
            facts={"container": container_id, "program": argv[0]},
        ) from exc
    except (OSError, requests.exceptions.RequestException) as exc:
        raise ExternalCommandFailed(
            f"the connection to the engine broke while {argv[0]} ran in container "
            f"{container_id[:12]}: {exc}",
            facts={"container": container_id, "program": argv[0]},
        ) from exc


def _open_exec(client: Any, exec_id: str) -> tuple[Any, Any]:
    """Start an exec and return its hijacked connection: the file-like object the frame readers
    use, and the raw socket (for writing stdin and for closing; closing the first alone leaks
    the second)."""
    sock = client.api.exec_start(exec_id, socket=True)
    return sock, getattr(sock, "_sock", sock)


def _close(sock: Any, raw: Any) -> None:
    with contextlib.suppress(OSError):
        sock.close()
    with contextlib.suppress(OSError):
        raw.close()


#: Seconds to wait for the engine to mark an exec finished once its output stream has ended.
EXEC_SETTLE_S = 5.0


#: read_all's script: $1 the directory, $2 the suffix; a tar of the matching files on stdout.
_READ_ALL = """
[ -d "$1" ] || exit 0
cd "$1" || exit 5
suffix=$2
set --
for f in *"$suffix"; do
    case $f in *.tmp-*) continue ;; esac
    [ -f "$f" ] && set -- "$@" "$f"
done
[ $# -gt 0 ] || exit 0
exec tar -cf - -- "$@"
"""


def _result(client: Any, exec_id: str, out: bytes, err: bytes) -> ExecResult:
    # The output stream can end a moment before the engine records the exit (seen under load):
    # reading the exit code at once then finds the exec still running.
    deadline = time.monotonic() + EXEC_SETTLE_S
    info = client.api.exec_inspect(exec_id)
    while info.get("Running") and time.monotonic() < deadline:
        time.sleep(0.05)
        info = client.api.exec_inspect(exec_id)
    code = None if info.get("Running") else info.get("ExitCode")
    return ExecResult(exit_code=-1 if code is None else int(code), stdout=out, stderr=err)


def exec_capture(
    client: Any,
    container_id: str,
    argv: list[str],
    *,
    stdin: Iterable[bytes] | None = None,
    user: str = "",
    environment: dict[str, str] | None = None,
) -> ExecResult:
    """Run argv in a container, optionally feeding `stdin` chunk by chunk; capture its output.

    Half-closing the socket after the last chunk is what makes the process see end of input.
    """
    with _engine_errors(container_id, argv):
        created = client.api.exec_create(
            container_id, argv, stdin=stdin is not None, user=user, environment=environment
        )
        exec_id = created["Id"]
        sock, raw = _open_exec(client, exec_id)
        try:
            if stdin is not None:
                for chunk in stdin:
                    if chunk:
                        raw.sendall(chunk)
                raw.shutdown(socket.SHUT_WR)
            frames = (demux_adaptor(*f) for f in frames_iter(sock, tty=False))
            out, err = consume_socket_output(frames, demux=True)
        finally:
            _close(sock, raw)
        return _result(client, exec_id, out or b"", err or b"")


def exec_stream(
    client: Any, container_id: str, argv: list[str], *, user: str = ""
) -> tuple[Iterator[bytes], Callable[[], ExecResult]]:
    """Run argv in a container and stream its stdout. Returns the chunks and a function that,
    once they are consumed, gives the exit code and the (bounded) stderr."""
    with _engine_errors(container_id, argv):
        exec_id = client.api.exec_create(container_id, argv, user=user)["Id"]
    stderr = bytearray()

    def chunks() -> Iterator[bytes]:
        with _engine_errors(container_id, argv):
            sock, raw = _open_exec(client, exec_id)
            try:
                for stream, data in frames_iter(sock, tty=False):
                    if stream == STDOUT:
                        yield data
                    else:
                        stderr.extend(data)
                        del stderr[:-8192]
            finally:
                _close(sock, raw)

    def result() -> ExecResult:
        with _engine_errors(container_id, argv):
            return _result(client, exec_id, b"", bytes(stderr))

    return chunks(), result


@dataclass(frozen=True)
class StreamedFile:
    size: int
    sha256: str


#: Writes stdin to $1 and goes on only when all $3 bytes arrived. When deploytools is killed
#: mid-write, the exec's stdin closes early and `cat` ends without error: a short file must not
#: take the real name (an empty record or lock would then be read as corrupt JSON).
_COMPLETE = (
    'cat > "$1" || { rm -f "$1"; exit 4; }; '
    '[ "$(wc -c < "$1")" -eq "$3" ] || { rm -f "$1"; echo "short write" >&2; exit 4; }; '
)


class BackupStore:
    """An open store: a helper container with the store mounted at /store.

    Paths given to the methods are relative to the store's root. Every file is written with
    umask 077 (files 0600, directories 0700): backups hold every row of the database.
    """

    def __init__(self, client: Any, container: Any, description: str) -> None:
        self.client = client
        self.container = container
        self.description = description

    def _abs(self, path: str) -> str:
        full = posixpath.normpath(posixpath.join(MOUNT, path))
        if not full.startswith(MOUNT):
            raise ValueError(f"path {path!r} leaves the store")
        return full

    def sh(self, script: str, *args: str, stdin: Iterable[bytes] | None = None) -> ExecResult:
        """Run a small sh script in the helper with umask 077; args are $1, $2, ..."""
        argv = ["sh", "-c", "umask 077; " + script, "sh", *args]
        return exec_capture(self.client, self.container.id, argv, stdin=stdin)

    def _check(self, result: ExecResult, what: str) -> ExecResult:
        if result.exit_code != 0:
            raise ExternalCommandFailed(
                f"{what} failed in the backup store {self.description}: {result.error_line()}",
                facts={"exit_code": result.exit_code, "stderr": result.stderr[-2000:].decode()},
            )
        return result

    def ensure_dir(self, path: str) -> None:
        full = self._abs(path)
        self._check(
            self.sh('mkdir -p "$1" && chmod 0700 "$1" "$2"', full, MOUNT), f"creating {path}"
        )

    def read(self, path: str) -> bytes | None:
        """The file's content, or None when it does not exist."""
        result = self.sh('[ -f "$1" ] || exit 3; cat "$1"', self._abs(path))
        if result.exit_code == 3:
            return None
        return self._check(result, f"reading {path}").stdout

    def exists(self, path: str) -> bool:
        return self.sh('[ -e "$1" ]', self._abs(path)).exit_code == 0

    def write(self, path: str, data: bytes) -> None:
        """Write a small file whole: under a temporary name, then renamed (atomic)."""
        full = self._abs(path)
        tmp = f"{full}.tmp-{secrets.token_hex(4)}"
        self._check(
            self.sh(_COMPLETE + 'mv -f "$1" "$2"', tmp, full, str(len(data)), stdin=[data]),
            f"writing {path}",
        )

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create `path` with `data` only if it does not exist; False when it does.

        The content is complete before the name appears: written to a temporary file, then
        hard-linked to its name, which fails atomically when the name is taken.
        """
        full = self._abs(path)
        tmp = f"{full}.tmp-{secrets.token_hex(4)}"
        script = _COMPLETE + 'ln "$1" "$2" 2>/dev/null; rc=$?; rm -f "$1"; exit $rc'
        result = self.sh(script, tmp, full, str(len(data)), stdin=[data])
        if result.exit_code == 4:
            self._check(result, f"writing {path}")
        return result.exit_code == 0

    def remove(self, *paths: str) -> None:
        if paths:
            full = [self._abs(p) for p in paths]
            self._check(self.sh('rm -f -- "$@"', *full), "removing " + ", ".join(paths))

    def remove_if_contains(self, path: str, text: str) -> bool:
        """Remove `path` when it holds `text` (one exec); False when it does not, or is gone."""
        result = self.sh(
            '[ -f "$1" ] || exit 3; grep -qF -- "$2" "$1" || exit 3; rm -f -- "$1"',
            self._abs(path),
            text,
        )
        if result.exit_code == 3:
            return False
        self._check(result, f"removing {path}")
        return True

    def list_files(self, directory: str, suffix: str = "") -> list[str]:
        """Names of the files in `directory` ending with `suffix`, sorted; [] when missing."""
        result = self.sh('[ -d "$1" ] || exit 0; ls -1 "$1"', self._abs(directory))
        names = self._check(result, f"listing {directory}").text().splitlines()
        return sorted(n for n in names if n.endswith(suffix) and ".tmp-" not in n)

    def read_all(self, directory: str, suffix: str = "") -> dict[str, bytes]:
        """Every file of `directory` whose name ends with `suffix` (not the temporary ones of a
        write in progress), by name; {} when there is none. One exec, a tar stream: a history of
        many records is read at once, not one exec per record. Files are replaced by renames,
        never rewritten in place, so each one read is whole."""
        result = self.sh(_READ_ALL, self._abs(directory), suffix)
        data = self._check(result, f"reading {directory}").stdout
        if not data:
            return {}
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    files[posixpath.basename(member.name)] = extracted.read()
        return files

    def free_bytes(self) -> int:
        """Bytes available to us in the store's file system."""
        result = self._check(self.sh('df -Pk "$1" | tail -n 1', MOUNT), "measuring free space")
        return int(result.text().split()[3]) * 1024

    def file_mode(self, path: str) -> str:
        result = self._check(self.sh('stat -c %a "$1"', self._abs(path)), f"reading {path}")
        return result.text().strip()

    def sha256(self, path: str) -> str:
        result = self._check(self.sh('sha256sum "$1"', self._abs(path)), f"hashing {path}")
        return result.text().split()[0]

    def size(self, path: str) -> int:
        result = self._check(self.sh('stat -c %s "$1"', self._abs(path)), f"sizing {path}")
        return int(result.text().strip())

    def write_stream(
        self,
        path: str,
        chunks: Iterable[bytes],
        *,
        on_bytes: Callable[[int], None] | None = None,
    ) -> StreamedFile:
        """Stream `chunks` into `path` through a temporary name; rename only when complete.

        Returns the size and sha256 computed on the way (the store re-reads nothing).
        A failure removes the temporary file, so no partial file ever carries the real name.
        """
        full = self._abs(path)
        tmp = f"{full}.tmp-{secrets.token_hex(4)}"
        digest = hashlib.sha256()
        size = 0

        def counted() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                if on_bytes:
                    on_bytes(size)
                yield chunk

        try:
            result = self.sh('cat > "$1"', tmp, stdin=counted())
            self._check(result, f"writing {path}")
            self._check(self.sh('sync "$1" 2>/dev/null; mv "$1" "$2"', tmp, full), "renaming")
        except BaseException:
            with contextlib.suppress(Exception):
                self.sh('rm -f "$1"', tmp)
            raise
        return StreamedFile(size=size, sha256=digest.hexdigest())

    def read_stream(self, path: str) -> tuple[Iterator[bytes], Callable[[], ExecResult]]:
        return exec_stream(self.client, self.container.id, ["cat", self._abs(path)])

    def run(self, argv: list[str]) -> ExecResult:
        """Any program of the helper's image (pg_restore --list, for one)."""
        return exec_capture(self.client, self.container.id, argv)

    def path(self, path: str) -> str:
        """The path as the helper sees it."""
        return self._abs(path)


def helper_image(client: Any, candidates: list[Any]) -> str:
    """The first image of `candidates` (containers) present on the engine, else Debian's."""
    for container in candidates:
        image_id = container.attrs.get("Image", "")
        if image_id:
            return str(image_id)
    return FALLBACK_HELPER_IMAGE


#: What a read-only open mounts in place of a store that does not exist yet, and says of it.
EMPTY_STORE = {MOUNT: "ro,size=64k"}
NOT_CREATED = "(not created yet: empty)"


@contextlib.contextmanager
def open_store(
    client: Any, store: str, *, image: str, name_prefix: str, create: bool = True
) -> Iterator[BackupStore]:
    """Start a helper container with `store` ("volume:NAME" or "dir:/path") mounted; remove it
    on the way out (and it removes itself after HELPER_LIFETIME_S if we are killed).

    `create=False` is for the commands that only read (status, history, report): a store volume
    or directory that does not exist yet is not created; the helper mounts an empty read-only
    tmpfs in its place, which reads like the empty store it would be."""
    kind, _, location = store.partition(":")
    # A volume mount, or a bind mount of the engine host's directory. `volumes=` would create a
    # missing directory (as root, on the engine's host); a Mount of type bind refuses it instead,
    # so a read-only command can tell "not there" from "empty".
    volumes = {location: {"bind": MOUNT, "mode": "rw"}} if kind == "volume" or create else {}
    mounts = [] if volumes else [docker.types.Mount(MOUNT, location, type="bind")]
    tmpfs: dict[str, str] = {}
    description = store
    if kind == "volume":
        try:
            client.volumes.get(location)
        except docker.errors.NotFound:
            if create:
                client.volumes.create(name=location, labels={HELPER_LABEL: "backup-store"})
            else:
                volumes, tmpfs, description = {}, EMPTY_STORE, f"{store} {NOT_CREATED}"
    name = f"{name_prefix}-store-{secrets.token_hex(3)}"
    run = functools.partial(
        client.containers.run,
        image,
        entrypoint=["sleep", str(HELPER_LIFETIME_S)],
        command=[],
        name=name,
        detach=True,
        auto_remove=True,
        user="0",
        network_mode="none",
        labels={HELPER_LABEL: "backup-store-helper"},
    )
    try:
        try:
            container = run(volumes=volumes, mounts=mounts, tmpfs=tmpfs)
        except docker.errors.APIError as exc:
            if not mounts or "does not exist" not in str(exc):
                raise
            # The directory is not there: read it as the empty store it would be.
            description = f"{store} {NOT_CREATED}"
            container = run(tmpfs=EMPTY_STORE)
    except docker.errors.DockerException as exc:
        raise EnvironmentUnreachable(
            f"cannot open the backup store {store}: {exc}",
            untouched="nothing was done",
            hint="check that the image exists on the engine and the store's path is allowed",
            facts={"store": store, "image": image},
        ) from None
    try:
        yield BackupStore(client, container, description)
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            # v=True: the helper's image may declare a VOLUME (the PostgreSQL image does), and
            # its anonymous volume would otherwise stay behind on the engine after every command.
            container.remove(force=True, v=True)


__all__ = [
    "BackupStore",
    "ExecResult",
    "StreamedFile",
    "exec_capture",
    "exec_stream",
    "helper_image",
    "open_store",
]
