"""The health probe a rolling deploy sends from the proxy container (proxy.ASK_SCRIPT,
proxy.WARM_SCRIPT), run here in this machine's bash against a local HTTP server: the app's
image needs no HTTP client, the proxy's bash speaks HTTP/1.0 itself."""

from __future__ import annotations

import contextlib
import http.server
import random
import subprocess
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools import proxy
from deploytools.engine.exec import ExecResult
from deploytools.errors import CheckFailed
from deploytools.proxy_settings import HealthAnswer
from deploytools.steps import deploy_rolling


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the probe asks 1.0: the server must close anyway

    def do_GET(self) -> None:
        routes = {"/healthz": (200, b"true"), "/health": (200, b'{"status": "ok"}')}
        status, body = routes.get(self.path, (503, b'{"status": "down"}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Exclusive(http.server.ThreadingHTTPServer):
    allow_reuse_address = False  # a port another socket holds in any state is not taken


def below_the_ephemeral_range() -> http.server.ThreadingHTTPServer:
    """A server on a port below the kernel's ephemeral range, which is also where the engine
    picks the host ports it publishes: with its userland proxy off, a published port is an
    iptables rule that takes 127.0.0.1:PORT's packets whoever listens there."""
    for port in random.sample(range(20_000, 32_000), 50):
        with contextlib.suppress(OSError):
            return Exclusive(("127.0.0.1", port), Handler)
    raise RuntimeError("no free port in 20000-32000")


@pytest.fixture(scope="module")
def app_port() -> Iterator[int]:
    server = below_the_ephemeral_range()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class LocalGateway:
    """The proxy container, played by this machine: exec runs argv here."""

    name = "proxy"

    def exec(self, argv: list[str], *, timeout_s: float) -> ExecResult:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
        return ExecResult(done.returncode, done.stdout, done.stderr)


def test_ask_reads_the_status_and_a_scalar_body(app_port: int) -> None:
    answer = proxy.ask(LocalGateway(), "127.0.0.1", app_port, "/healthz", timeout_s=10)
    assert answer == proxy.Answer(200, "true")
    assert HealthAnswer("/healthz", 200, True).problems(answer.status, answer.body) == []


def test_ask_reads_another_status(app_port: int) -> None:
    answer = proxy.ask(LocalGateway(), "127.0.0.1", app_port, "/nowhere", timeout_s=10)
    assert answer.status == 503
    assert HealthAnswer("/nowhere").problems(answer.status, answer.body) == ["status 503, want 200"]


def test_ask_says_when_nothing_listens() -> None:
    with pytest.raises(CheckFailed, match="gave no HTTP answer"):
        proxy.ask(LocalGateway(), "127.0.0.1", 1, "/healthz", timeout_s=10)


def test_ask_refuses_what_is_not_an_address() -> None:
    with pytest.raises(ValueError):
        proxy.ask_argv("app; rm -rf /", 80, "/")


def test_smoke_holds_the_answer_against_the_configured_one(app_port: int) -> None:
    new = SimpleNamespace(name="app_2")
    good = SimpleNamespace(app_port=app_port, health=HealthAnswer("/healthz", 200, True))
    deploy_rolling.smoke(new, LocalGateway(), "127.0.0.1", good)  # type: ignore[arg-type]
    wrong = SimpleNamespace(
        app_port=app_port, health=HealthAnswer("/health", 200, {"status": "up"})
    )
    with pytest.raises(CheckFailed, match='status is "ok", want "up"'):
        deploy_rolling.smoke(new, LocalGateway(), "127.0.0.1", wrong)  # type: ignore[arg-type]


def test_warm_passes_when_every_request_answers(app_port: int) -> None:
    proxy.warm(
        LocalGateway(),  # type: ignore[arg-type]
        "127.0.0.1",
        app_port,
        HealthAnswer("/healthz"),
        concurrency=8,
        rounds=2,
        timeout_s=30,
    )


def test_warm_counts_the_requests_that_failed(app_port: int) -> None:
    with pytest.raises(CheckFailed, match="6 of 6 requests did not answer 200"):
        proxy.warm(
            LocalGateway(),  # type: ignore[arg-type]
            "127.0.0.1",
            app_port,
            HealthAnswer("/nowhere"),
            concurrency=3,
            rounds=2,
            timeout_s=30,
        )


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("HTTP/1.0 200 OK\r\nA: b\r\n\r\ntrue\n", proxy.Answer(200, "true")),
        ("HTTP/1.1 204\r\n\r\n", proxy.Answer(204, "")),
        ('HTTP/1.0 200 OK\r\n\r\n{"a":\n1}\n', proxy.Answer(200, '{"a":\n1}')),
        ("", None),
        ("SSH-2.0-OpenSSH\r\n", None),
    ],
)
def test_parse_answer(output: str, expected: proxy.Answer | None) -> None:
    assert proxy.parse_answer(output) == expected
