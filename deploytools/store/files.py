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
import hashlib
import io
import posixpath
import secrets
import shlex
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from deploytools.engine.client import Container, Engine, Mount, OneOff
from deploytools.engine.errors import EngineAPIError, EngineError
from deploytools.engine.exec import ExecResult, ExecStream
from deploytools.errors import EnvironmentUnreachable, ExternalCommandFailed
from deploytools.store import helper
from deploytools.store.helper import HELPER_LABEL, MOUNT

#: A command's own helper's deadline: it removes itself even if deploytools is killed.
HELPER_LIFETIME_S = 6 * 3600
FALLBACK_HELPER_IMAGE = "debian:bookworm-slim"
#: The deadline of one small script in the helper (read, write, list, hash a record or lock).
SCRIPT_TIMEOUT_S = 300.0


#: The exit code of a script whose pending directories could not be made (none of the store's
#: scripts exits with it).
_DIRS_FAILED = 97

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

    def __init__(self, container: Container, description: str) -> None:
        self.container = container
        self.description = description
        #: Directories `ensure_dir(..., with_next=True)` left to the next script to make.
        self._pending_dirs: list[str] = []

    def _abs(self, path: str) -> str:
        full = posixpath.normpath(posixpath.join(MOUNT, path))
        if not full.startswith(MOUNT):
            raise ValueError(f"path {path!r} leaves the store")
        return full

    def sh(self, script: str, *args: str, stdin: Iterable[bytes] | None = None) -> ExecResult:
        """Run a small sh script in the helper with umask 077; args are $1, $2, ... The
        directories left pending by `ensure_dir` are made first, in the same exec."""
        pending = self._pending_dirs
        prefix = ""
        if pending:
            quoted = " ".join(shlex.quote(d) for d in pending)
            prefix = f"mkdir -p -- {quoted} && chmod 0700 {quoted} {MOUNT} || exit {_DIRS_FAILED}; "
        argv = ["sh", "-c", "umask 077; " + prefix + script, "sh", *args]
        # A script fed a stream (a dump) waits on its writer, not on its own work.
        result = self.container.exec(argv, stdin=stdin, timeout_s=SCRIPT_TIMEOUT_S)
        if pending:
            if result.exit_code == _DIRS_FAILED:
                self._check(result, "creating " + ", ".join(pending))
            self._pending_dirs = []
        return result

    def _make_pending_dirs(self) -> None:
        if self._pending_dirs:
            self._check(self.sh(":"), "creating directories")

    def _check(self, result: ExecResult, what: str) -> ExecResult:
        if result.exit_code != 0:
            raise ExternalCommandFailed(
                f"{what} failed in the backup store {self.description}: {result.error_line()}",
                facts={"exit_code": result.exit_code, "stderr": result.stderr[-2000:].decode()},
            )
        return result

    def ensure_dir(self, *paths: str, with_next: bool = False) -> None:
        """Make the directories (and their parents) that do not exist, 0700: one exec, or
        none with `with_next`: then the next script run here makes them before its own work
        (in its exec; a failure to make them is that script's failure)."""
        full = [self._abs(path) for path in paths]
        if with_next:
            self._pending_dirs += [p for p in full if p not in self._pending_dirs]
            return
        self._check(
            self.sh('mkdir -p "$@" && chmod 0700 "$@" ' + MOUNT, *full),
            "creating " + ", ".join(paths),
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
        return _untar(self._check(result, f"reading {directory}").stdout)

    def create_exclusive_then_read_all(
        self, path: str, data: bytes, directory: str, suffix: str = ""
    ) -> dict[str, bytes] | None:
        """`create_exclusive`, then, when it created `path`, `read_all(directory, suffix)`, in
        one exec: what was read is as it stands once `path` exists (the deploy lock and the
        records it guards). None when `path` existed (nothing is read)."""
        full = self._abs(path)
        tmp = f"{full}.tmp-{secrets.token_hex(4)}"
        script = (
            _COMPLETE
            + 'ln "$1" "$2" 2>/dev/null; rc=$?; rm -f "$1"; [ $rc -eq 0 ] || exit 3; '
            + "shift 3; read_all() {"
            + _READ_ALL
            + '}; read_all "$@"'
        )
        args = (tmp, full, str(len(data)), self._abs(directory), suffix)
        result = self.sh(script, *args, stdin=[data])
        if result.exit_code == 3:
            return None
        return _untar(self._check(result, f"writing {path} and reading {directory}").stdout)

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

    def read_stream(self, path: str) -> ExecStream:
        """The file's bytes, streamed; `result()` afterwards says whether `cat` read it all."""
        self._make_pending_dirs()
        return self.container.exec_stream(["cat", self._abs(path)])

    def run(self, argv: list[str]) -> ExecResult:
        """Any program of the helper's image (pg_restore --list, for one)."""
        self._make_pending_dirs()
        return self.container.exec(argv)

    def path(self, path: str) -> str:
        """The path as the helper sees it."""
        return self._abs(path)


def _untar(data: bytes) -> dict[str, bytes]:
    """The files of a tar stream (read_all's), by base name; {} for no stream at all."""
    if not data:
        return {}
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                files[posixpath.basename(member.name)] = extracted.read()
    return files


def helper_image(candidates: Iterable[Container]) -> str:
    """The image of the first of `candidates` (containers) on the engine, else Debian's."""
    for container in candidates:
        if container.image_id:
            return container.image_id
    return FALLBACK_HELPER_IMAGE


#: What a read-only open mounts in place of a store that does not exist yet, and says of it.
EMPTY_STORE = {MOUNT: "ro,size=64k"}
NOT_CREATED = "(not created yet: empty)"


def _mounts(kind: str, location: str, *, create: bool) -> list[Mount]:
    """The store as a helper mounts it: a volume, or the engine host's directory. For a
    directory, a plain volume bind (kind "volume" with a path) creates it when missing (as root,
    on the engine's host); a Mount of type bind refuses it instead, so a read-only command can
    tell "not there" from "empty"."""
    return [Mount(MOUNT, location, kind="volume" if kind == "volume" or create else "bind")]


@contextlib.contextmanager
def open_store(
    engine: Engine,
    store: str,
    *,
    image: str,
    name_prefix: str,
    create: bool = True,
    keep_s: float = 0.0,
) -> Iterator[BackupStore]:
    """Reach `store` ("volume:NAME" or "dir:/path") through a helper container that mounts it.

    `keep_s` > 0: through a kept helper (store/helper.py), reused when one runs, started and
    left running otherwise; it goes away by itself once unused for `keep_s` seconds (at least
    helper.MIN_IDLE_S). `keep_s` 0: a helper of this command's own, removed on the way out
    (and it removes itself after HELPER_LIFETIME_S if we are killed).

    `create=False` is for the commands that only read (status, history, report): a store volume
    or directory that does not exist yet is not created; the helper mounts an empty read-only
    tmpfs in its place, which reads like the empty store it would be (a kept helper, which
    mounts the store itself, is reused but never started by them)."""
    kind, _, location = store.partition(":")
    mounts = _mounts(kind, location, create=create)
    lease: helper.Lease | None = None
    try:
        if keep_s > 0:
            # Volume or bind, a kept helper mounts the same directory: look for either.
            wanted = Mount(MOUNT, location, kind="volume" if kind == "volume" else "bind")
            lease = helper.lease_reusable(engine, store, image, wanted)
        if lease is None:
            started = _start_helper(engine, store, image, name_prefix, mounts, create, keep_s)
            container, description, lease = started
        else:
            container, description = lease.container, store
    except EngineError as exc:
        raise EnvironmentUnreachable(
            f"cannot open the backup store {store}: {exc}",
            untouched="nothing was done",
            hint="check that the image exists on the engine and the store's path is allowed",
            facts={"store": store, "image": image},
        ) from None
    try:
        yield BackupStore(container, description)
    finally:
        if lease is not None:
            lease.release()  # the helper stays for the next command
        else:
            with contextlib.suppress(EngineError):
                # volumes=True: the helper's image may declare a VOLUME (the PostgreSQL image
                # does), and its anonymous volume would otherwise stay behind on the engine
                # after every command.
                container.remove(force=True, volumes=True)


def _start_helper(
    engine: Engine,
    store: str,
    image: str,
    name_prefix: str,
    mounts: list[Mount],
    create: bool,
    keep_s: float,
) -> tuple[Container, str, helper.Lease | None]:
    """Start a helper: kept (with its lease) when `keep_s` > 0 and the store exists or may be
    made, else one of this command's own. The container, the store's description, the lease."""
    kind, _, location = store.partition(":")
    tmpfs: dict[str, str] = {}
    description = store
    if kind == "volume" and not engine.volume_exists(location):
        if create:
            engine.create_volume(location, labels={HELPER_LABEL: "backup-store"})
        else:
            mounts, tmpfs, description = [], EMPTY_STORE, f"{store} {NOT_CREATED}"
    if keep_s > 0 and create:
        spec = helper.kept_spec(store, image, name_prefix=name_prefix, mounts=mounts, idle_s=keep_s)
        lease = helper.start_kept(engine, spec)
        return lease.container, description, lease
    one_off = OneOff(
        image=image,
        name=f"{name_prefix}-store-{secrets.token_hex(3)}",
        entrypoint=["sleep", str(HELPER_LIFETIME_S)],
        command=[],
        auto_remove=True,
        user="0",
        network_mode="none",
        labels={HELPER_LABEL: helper.ROLE},
        mounts=mounts,
        tmpfs=tmpfs,
    )
    try:
        return engine.run(one_off), description, None
    except EngineAPIError as exc:
        if not any(m.kind == "bind" for m in mounts) or "does not exist" not in str(exc):
            raise
    # The directory is not there: read it as the empty store it would be.
    container = engine.run(OneOff(**{**one_off.__dict__, "mounts": (), "tmpfs": EMPTY_STORE}))
    return container, f"{store} {NOT_CREATED}", None


__all__ = [
    "HELPER_LABEL",
    "MOUNT",
    "BackupStore",
    "ExecResult",
    "StreamedFile",
    "helper_image",
    "open_store",
]
