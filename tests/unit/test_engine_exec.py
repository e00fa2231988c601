"""The engine's exec over a fake engine API whose hijacked connection is a local socket pair:
output is demultiplexed, stdin is fed and closed, and a silent program meets its deadline."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import pytest

from deploytools.engine import exec as engine_exec
from deploytools.errors import DeadlineExceeded


def frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(data)) + data


class FakeApi:
    """exec_create / exec_start / exec_inspect; `program` plays the process on the far end."""

    def __init__(self, program: Callable[[socket.socket], None], exit_code: int = 0) -> None:
        self.program, self.exit_code = program, exit_code
        self.created: list[dict[str, Any]] = []

    def exec_create(self, container: str, argv: list[str], **options: Any) -> dict[str, str]:
        self.created.append({"container": container, "argv": argv, **options})
        return {"Id": "exec-1"}

    def exec_start(self, exec_id: str, *, socket: bool) -> Any:
        ours, engine = _pair()
        threading.Thread(target=self.program, args=(engine,), daemon=True).start()
        return ours

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return {"Running": False, "ExitCode": self.exit_code}


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair()


def test_capture_feeds_stdin_and_keeps_stdout_and_stderr_apart() -> None:
    def cat_upper(engine: socket.socket) -> None:
        received = b""
        while chunk := engine.recv(4096):  # until our half-close
            received += chunk
        engine.sendall(frame(1, received.upper()) + frame(2, b"warning\n"))
        engine.close()

    api = FakeApi(cat_upper, exit_code=3)
    result = engine_exec.capture(api, "c1", ["tr", "a-z", "A-Z"], stdin=[b"ab", b"", b"cd"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"ABCD", b"warning\n")
    assert result.output() == b"ABCDwarning\n" and result.error_line() == "warning"
    assert api.created[0]["argv"] == ["tr", "a-z", "A-Z"] and api.created[0]["stdin"] is True


def test_a_silent_program_meets_the_deadline_of_capture_and_stream() -> None:
    release = threading.Event()

    def silent(engine: socket.socket) -> None:
        release.wait(30)
        engine.close()

    try:
        with pytest.raises(DeadlineExceeded) as caught:
            engine_exec.capture(FakeApi(silent), "c1", ["sleep", "999"], timeout_s=0.2)
        assert "sleep in container c1 gave no sign of life" in caught.value.message
        streamed = engine_exec.stream(FakeApi(silent), "c2", ["pg_dump"], timeout_s=0.2)
        with pytest.raises(DeadlineExceeded):
            list(streamed.chunks)
    finally:
        release.set()


def test_stream_hands_over_stdout_and_keeps_the_end_of_stderr() -> None:
    def dump(engine: socket.socket) -> None:
        engine.sendall(frame(1, b"PGDMP") + frame(2, b"x" * 10_000) + frame(1, b"-rest"))
        engine.close()

    chunks, result = engine_exec.stream(FakeApi(dump, exit_code=0), "c1", ["pg_dump"])
    assert b"".join(chunks) == b"PGDMP-rest"
    done = result()
    assert done.exit_code == 0 and len(done.stderr) == engine_exec.STDERR_KEPT
