"""Running a program inside a running container (`docker exec`), the one way deploytools does.

Three shapes, all with a deadline:
- `capture`: run to completion, optionally feeding stdin chunk by chunk, and keep the output
  (stdout and stderr apart);
- `stream`: run and hand stdout over chunk by chunk (a dump of any size never sits in memory),
  then the exit code and the bounded stderr;
- `attach`: a session whose stdin and stdout stay open (HAProxy's runtime API, a psql session
  that holds a snapshot), read frame by frame by the caller.

The deadline of `capture` and `stream` bounds each wait for the program (a read that brings
nothing, a write it does not take): a program that goes silent for `timeout_s` is given up on
with DeadlineExceeded. The stream is read here, not by the SDK's readers, which wait without one.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from deploytools.engine.errors import EngineError, translated
from deploytools.errors import DeadlineExceeded, ExternalCommandFailed

#: stdout's stream number in the engine's multiplexed exec stream (stderr is 2).
STDOUT = 1
STDERR = 2
#: How long a program may stay silent (no output, not taking input) before it is given up on,
#: unless the caller names its own deadline.
DEFAULT_TIMEOUT_S = 3600.0
#: Seconds to wait for the engine to mark an exec finished once its output stream has ended.
EXEC_SETTLE_S = 5.0
#: How much of a streamed program's stderr is kept (the end of it).
STDERR_KEPT = 8192


@dataclass(frozen=True)
class ExecResult:
    """A finished exec: its exit code (-1 when the engine never said) and its output."""

    exit_code: int
    stdout: bytes
    stderr: bytes

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def error_line(self) -> str:
        lines = (self.stderr or self.stdout).decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def output(self) -> bytes:
        """stdout then stderr, as `docker exec` shows them together."""
        return self.stdout + self.stderr


@contextlib.contextmanager
def _exec_errors(container: str, argv: Sequence[str], timeout_s: float) -> Iterator[None]:
    """The engine refusing an exec (the container stopped, was removed), the connection to it
    breaking, or the program going silent past its deadline: one DeployError naming the
    container and the program."""
    program = argv[0] if argv else "a program"
    try:
        with translated():
            yield
    except TimeoutError:
        raise DeadlineExceeded(
            f"{program} in container {container[:12]} gave no sign of life for {timeout_s:.0f} s",
            hint="look at the container's logs and at the engine's load",
            facts={"container": container, "program": program, "timeout_s": timeout_s},
        ) from None
    except EngineError as exc:
        raise ExternalCommandFailed(
            f"running {program} in container {container[:12]} failed: {exc.explanation}",
            facts={"container": container, "program": program},
        ) from exc
    except OSError as exc:
        raise ExternalCommandFailed(
            f"the connection to the engine broke while {program} ran in container "
            f"{container[:12]}: {exc}",
            facts={"container": container, "program": program},
        ) from exc


def _open(api: Any, exec_id: str, timeout_s: float | None) -> tuple[Any, Any]:
    """Start an exec and return its hijacked connection: the file-like object the frame readers
    use, and the raw socket (for writing stdin and for closing; closing the first alone leaks
    the second). The raw socket gets the deadline where it takes one (the ssh transport's pipe
    does not)."""
    sock = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)
    settimeout = getattr(raw, "settimeout", None)
    if settimeout is not None and timeout_s is not None:
        settimeout(timeout_s)
    return sock, raw


def _close(sock: Any, raw: Any) -> None:
    with contextlib.suppress(OSError):
        sock.close()
    with contextlib.suppress(OSError):
        raw.close()


def _read_exactly(raw: Any, size: int) -> bytes | None:
    """`size` bytes from the raw socket, or None when the stream ended first. Each recv
    honours the socket's timeout (the SDK's own readers poll without one)."""
    data = b""
    while len(data) < size:
        chunk = raw.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def frames(raw: Any) -> Iterator[tuple[int, bytes]]:
    """The engine's multiplexed exec stream (8-byte headers: stream number, payload size),
    frame by frame, until it ends."""
    while True:
        header = _read_exactly(raw, 8)
        if header is None:
            return
        size = struct.unpack(">I", header[4:])[0]
        payload = _read_exactly(raw, size) if size else b""
        if payload is None:
            return
        yield header[0], payload


def settle(api: Any, exec_id: str, out: bytes, err: bytes) -> ExecResult:
    """The exec's result once the engine recorded its exit.

    The output stream can end a moment before the engine records the exit (seen under load):
    reading the exit code at once then finds the exec still running.
    """
    deadline = time.monotonic() + EXEC_SETTLE_S
    info = api.exec_inspect(exec_id)
    while info.get("Running") and time.monotonic() < deadline:
        time.sleep(0.05)
        info = api.exec_inspect(exec_id)
    code = None if info.get("Running") else info.get("ExitCode")
    return ExecResult(exit_code=-1 if code is None else int(code), stdout=out, stderr=err)


def capture(
    api: Any,
    container: str,
    argv: Sequence[str],
    *,
    stdin: Iterable[bytes] | None = None,
    user: str = "",
    environment: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ExecResult:
    """Run argv in `container`, optionally feeding `stdin` chunk by chunk; keep its output.

    Half-closing the socket after the last chunk is what makes the program see end of input.
    """
    with _exec_errors(container, argv, timeout_s):
        created = api.exec_create(
            container,
            list(argv),
            stdin=stdin is not None,
            user=user,
            environment=dict(environment) if environment else None,
        )
        exec_id = created["Id"]
        sock, raw = _open(api, exec_id, timeout_s)
        try:
            if stdin is not None:
                for chunk in stdin:
                    if chunk:
                        raw.sendall(chunk)
                raw.shutdown(socket.SHUT_WR)
            out, err = bytearray(), bytearray()
            for number, data in frames(raw):
                (out if number == STDOUT else err).extend(data)
        finally:
            _close(sock, raw)
        return settle(api, exec_id, bytes(out), bytes(err))


class ExecStream(NamedTuple):
    """A running exec's stdout, chunk by chunk; `result()` once they are consumed gives the
    exit code and the end of stderr. Unpacks as `chunks, result = ...`."""

    chunks: Iterator[bytes]
    result: Callable[[], ExecResult]


def stream(
    api: Any,
    container: str,
    argv: Sequence[str],
    *,
    user: str = "",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ExecStream:
    """Run argv in `container` and stream its stdout (see ExecStream)."""
    with _exec_errors(container, argv, timeout_s):
        exec_id = api.exec_create(container, list(argv), user=user)["Id"]
    stderr = bytearray()

    def chunks() -> Iterator[bytes]:
        with _exec_errors(container, argv, timeout_s):
            sock, raw = _open(api, exec_id, timeout_s)
            try:
                for number, data in frames(raw):
                    if number == STDOUT:
                        yield data
                    else:
                        stderr.extend(data)
                        del stderr[:-STDERR_KEPT]
            finally:
                _close(sock, raw)

    def result() -> ExecResult:
        with _exec_errors(container, argv, timeout_s):
            return settle(api, exec_id, b"", bytes(stderr))

    return ExecStream(chunks(), result)


class AttachedExec:
    """An exec whose stdin and stdout stay attached: write with `send`, read frames with
    `read_frame` (stream number and payload; None at the end). The caller owns the reads'
    deadlines (`settimeout` on `socket`) and must `close` it."""

    def __init__(self, api: Any, container: str, argv: Sequence[str]) -> None:
        with _exec_errors(container, argv, DEFAULT_TIMEOUT_S):
            self.exec_id = str(
                api.exec_create(container, list(argv), stdin=True, stdout=True, stderr=True)["Id"]
            )
            attached = api.exec_start(self.exec_id, socket=True)
        self._api = api
        self._attached = attached
        #: The raw socket under the engine's hijacked HTTP connection (the SDK wraps it in a
        #: SocketIO): written to, shut down, and read with deadlines by the caller.
        self.socket: Any = getattr(attached, "_sock", attached)

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def read_frame(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, bytes] | None:
        """The next frame of the multiplexed stream, or None at its end; TimeoutError when
        nothing came for `timeout_s` (where the transport takes a timeout)."""
        settimeout = getattr(self.socket, "settimeout", None)
        if settimeout is not None:
            settimeout(timeout_s)
        return next(frames(self.socket), None)

    def drain(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Read and drop what is left of the stream, up to its end."""
        settimeout = getattr(self.socket, "settimeout", None)
        if settimeout is not None:
            settimeout(timeout_s)
        for _ in frames(self.socket):
            pass

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """End the session: stdin closes, the program in the container sees end of input."""
        self.close_stdin()
        with contextlib.suppress(OSError):
            self.socket.close()
        close = getattr(self._attached, "close", None)
        if close is not None:
            with contextlib.suppress(OSError):
                close()
