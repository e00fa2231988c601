"""A webhook receiver on 127.0.0.1 for tests: records each POST, answers as it is told.

    with FakeWebhooks() as hooks:
        hooks.answer("/slack", 500, "no_service")
        ... post to hooks.url + "/slack" ...
        assert hooks.received[0].json == {...}

Every path answers 200 "ok" (as Slack's incoming webhooks do) unless told otherwise.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeWebhooks:
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def answer(self, path: str, status: int, body: str = "", *, delay_s: float = 0.0) -> None:
        self.answers[path] = (status, body)
        if delay_s:
            self.delays[path] = delay_s

    def __enter__(self) -> FakeWebhooks:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fake.received.append(
                    Received(
                        method=self.command,
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=self.rfile.read(length) if length else b"",
                    )
                )
                time.sleep(fake.delays.get(self.path, 0.0))
                status, text = fake.answers.get(self.path, (200, "ok"))
                data = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: `received` is the log."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
