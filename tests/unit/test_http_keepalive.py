"""The checks' HTTP client against a real local server that closes kept-alive connections.

A proxy closes an idle kept-alive connection when it likes; a request sent on it just then gets
no answer at all. That is not the service refusing a login: the client sends it again on a new
connection. A request that got any part of an answer, or timed out, is never sent twice.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from deploytools.checks.http import HttpClient

BODY = b'{"ok": true}'
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n".encode()
    + b"Connection: keep-alive\r\n\r\n"
    + BODY
)


@dataclass
class Server:
    """One thread per connection; `second` says what happens to a connection's second request:
    "close" (closed with no answer), "answer"; `first` the same for the first request, plus
    "partial" (a status line and half a body, then closed) and "silent" (no answer)."""

    first: str = "answer"
    second: str = "close"
    requests: list[str] = field(default_factory=list)
    connections: int = 0
    sock: socket.socket = field(default_factory=socket.socket)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def start(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket, buffer: bytes) -> tuple[str, bytes] | None:
        while b"\r\n\r\n" not in buffer:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += conn.recv(65536)
        return head.split(b"\r\n")[0].decode(), rest[length:]

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            for behaviour in (self.first, self.second, "answer", "answer"):
                read = self._read_request(conn, buffer)
                if read is None:
                    return
                line, buffer = read
                self.requests.append(line)
                if behaviour == "answer":
                    conn.sendall(OK)
                elif behaviour == "partial":
                    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"ok"')
                    return
                elif behaviour == "silent":
                    time.sleep(1.0)
                    return
                else:  # "close": the connection ends with no answer at all
                    conn.shutdown(socket.SHUT_RDWR)
                    return

    def stop(self) -> None:
        # shutdown() wakes the accept() blocked in the accept thread; close() alone does not,
        # and that thread then answers a connection made later to whatever socket reuses the
        # descriptor (another module's test server).
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def server() -> Iterator[Server]:
    made = Server()
    made.start()
    yield made
    made.stop()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_request_on_a_kept_alive_connection_closed_before_any_answer_is_sent_again(
    server: Server, method: str
) -> None:
    client = HttpClient(server.url, timeout_s=5)
    try:
        first = client.request("GET", "/health")
        assert first.status == 200
        second = client.request(method, "/auth/login", body={"username": "viewer"})
    finally:
        client.close()
    assert second.status == 200, second.error
    assert second.json == {"ok": True}
    # The second request twice: once on the closed connection, once on a new one.
    sent_twice = [f"{method} /auth/login HTTP/1.1"] * 2
    assert server.requests == ["GET /health HTTP/1.1", *sent_twice]
    assert server.connections == 2


def test_a_post_that_got_part_of_an_answer_is_not_sent_again(server: Server) -> None:
    server.first = "partial"
    client = HttpClient(server.url, timeout_s=5)
    try:
        answer = client.request("POST", "/auth/login", body={"username": "viewer"})
    finally:
        client.close()
    assert answer.status == 0
    assert server.requests == ["POST /auth/login HTTP/1.1"]


def test_a_post_that_timed_out_is_not_sent_again(server: Server) -> None:
    server.first = "silent"
    client = HttpClient(server.url, timeout_s=0.3)
    try:
        answer = client.request("POST", "/auth/login", body={"username": "viewer"})
    finally:
        client.close()
    assert answer.status == 0
    assert "timed out" in answer.error
    assert server.requests == ["POST /auth/login HTTP/1.1"]


def test_a_refused_connection_is_still_no_answer() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = HttpClient(f"http://127.0.0.1:{port}", timeout_s=1)
    try:
        answer = client.request("POST", "/auth/login", body={})
    finally:
        client.close()
    assert answer.status == 0
    assert answer.error == "connection refused"
