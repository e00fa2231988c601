"""The parts of the rolling strategy and the proxy switch that need no engine.

The runtime API session runs proxy.CLIENT_SCRIPT in this machine's bash, attached the way the
engine attaches an exec (a socket carrying 8-byte frame headers), against a fake of HAProxy's
runtime API on a local TCP port. The real HAProxy is exercised by tests/integration/test_rolling.py.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from deploytools import proxy
from deploytools.commands import compose
from deploytools.engine.exec import AttachedExec, ExecResult
from deploytools.errors import CheckFailed, DeadlineExceeded, ExternalCommandFailed, UsageError
from deploytools.steps import deploy as deploy_step
from deploytools.steps import deploy_rolling
from deploytools.steps.migrate import ImageInfo

REPO_ROOT = Path(__file__).resolve().parents[2]

STAT_HEADER = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,addr"


def test_the_compose_files_proxy_config_is_the_rendered_one() -> None:
    stack = yaml.safe_load((REPO_ROOT / "docker-compose.prod.yml").read_text())
    service = stack["services"]["proxy"]
    # Compose turns `$$` into `$`.
    assert service["environment"]["DEPLOYTOOLS_PROXY_CONF"].replace("$$", "$") == proxy.render()
    assert "/tmp/haproxy.cfg" in service["command"][-1]
    assert service["stop_signal"] == "SIGUSR1"
    assert "ports" not in stack["services"]["app"]
    assert service["ports"] == ["${APP_PORT:-8080}:80"]


def test_render_has_the_service_server_two_disabled_slots_and_a_loopback_api() -> None:
    text = proxy.render("web", app_port=9000)
    assert f"stats socket ipv4@127.0.0.1:{proxy.ADMIN_PORT} level admin" in text
    assert f"server app web:9000 {proxy.SERVICE_SERVER_OPTIONS}" in text
    for slot in proxy.SLOTS:
        assert f"server {slot} 127.0.0.1:9000 disabled" in text
    assert "if { path /proxy-health }" in text


@pytest.mark.parametrize("bad", ["", "app; evil", "a b", "$host", "a}", "-x"])
def test_render_refuses_what_is_not_a_service_name(bad: str) -> None:
    with pytest.raises(ValueError):
        proxy.render(bad)


def stat(*rows: tuple[str, str, int]) -> str:
    lines = [STAT_HEADER, "app,BACKEND,0,0,0,0,0,0,UP,"]
    lines += [f"app,{name},0,0,{scur},0,0,0,{status},10.0.0.1:80" for name, status, scur in rows]
    return "\n".join(lines) + "\n\n"


def test_show_stat_is_read_by_its_header() -> None:
    text = stat(("app", "no check", 2), ("blue", "MAINT", 0), ("green", "MAINT (resolution)", 1))
    servers = proxy.parse_stat(text)
    assert list(servers) == ["app", "blue", "green"]
    assert servers["app"].serving and servers["app"].sessions == 2
    assert not servers["blue"].serving and not servers["green"].serving
    with pytest.raises(ExternalCommandFailed, match="show stat"):
        proxy.parse_stat("Unknown command.\n")


def test_a_pin_takes_the_slot_that_serves_nothing_and_the_cut_line_names_every_server() -> None:
    servers = proxy.parse_stat(
        stat(("app", "MAINT", 0), ("blue", "no check", 0), ("green", "MAINT", 0))
    )
    assert proxy.choose_server(servers, "10.0.0.7") == "green"
    assert proxy.choose_server(servers, None) == "app"
    assert proxy.cut_line("green", servers) == (
        "set server app/green state ready;set server app/app state maint;"
        "set server app/blue state maint"
    )


class FakeRuntimeApi(socketserver.ThreadingTCPServer):
    """HAProxy's runtime API in non-interactive mode: one command line per connection, the
    answer, then the connection closes. Servers are (status, sessions); a server put in
    maintenance keeps its sessions for `drain_s` (None: for ever), as requests in flight do."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, servers: dict[str, str], *, drain_s: float | None = 0.2) -> None:
        super().__init__(("127.0.0.1", 0), FakeRuntimeApiHandler)
        self.status = dict(servers)
        self.sessions = {
            name: (3 if status == "no check" else 0) for name, status in servers.items()
        }
        self.drained_at: dict[str, float] = {}
        self.drain_s = drain_s
        self.commands: list[str] = []
        self.lines: list[str] = []  # as sent: several commands per line
        self.fail: dict[str, str] = {}
        self.delay_s = 0.0  # before each answer

    def answer(self, line: str) -> str:
        time.sleep(self.delay_s)
        self.lines.append(line)
        out = []
        for command in line.split(";"):
            self.commands.append(command)
            out.append(self.run(command.split()))
        return "".join(out) + "\n"

    def run(self, words: list[str]) -> str:
        now = time.monotonic()
        for name, at in list(self.drained_at.items()):
            if self.drain_s is not None and now - at >= self.drain_s:
                self.sessions[name] = 0
        if words[:2] == ["show", "stat"]:
            rows = [(n, s, self.sessions[n]) for n, s in self.status.items()]
            return stat(*rows)
        if words[:2] == ["set", "server"]:
            name = words[2].split("/")[1]
            if name not in self.status:
                return "No such server.\n"
            if words[3] in self.fail:
                return self.fail[words[3]]
            if words[3:] == ["state", "ready"]:
                self.status[name] = "no check"
            elif words[3:] == ["state", "maint"]:
                if self.status[name] != "MAINT" and self.sessions[name]:
                    self.drained_at[name] = now
                self.status[name] = "MAINT"
            elif words[3] == "addr":
                return f"IP changed from '1.1.1.1' to '{words[4]}', no need to change the port.\n"
            return ""
        return "Unknown command.\n"


class FakeRuntimeApiHandler(socketserver.StreamRequestHandler):
    server: FakeRuntimeApi

    def handle(self) -> None:
        line = self.rfile.readline().decode().rstrip("\n")
        self.wfile.write(self.server.answer(line).encode())


class LocalProxy:
    """The proxy container: an exec is this machine's bash, attached through a socket pair
    whose far end frames the process's stdout and stderr as the engine does."""

    name = "dtroll-proxy"
    id = "dtroll-proxy-id"

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = SimpleNamespace(api=self)
        self.ignores_timeouts = False  # as the SDK's ssh socket (a pipe to `ssh`)
        self.processes: list[subprocess.Popen[bytes]] = []

    def exec_attached(self, argv: list[str]) -> AttachedExec:
        """As `engine.Container.exec_attached`, with this object as the engine's API."""
        return AttachedExec(self, self.id, argv)

    def exec_create(self, container: str, argv: list[str], **streams: bool) -> dict[str, str]:
        assert container == self.id and streams == {"stdin": True, "stdout": True, "stderr": True}
        assert argv[:2] == ["bash", "-c"] and argv[-1] == str(proxy.ADMIN_PORT)
        self.argv = [*argv[:-1], str(self.port)]
        return {"Id": "exec-1"}

    def exec_start(self, exec_id: str, *, socket: bool) -> Any:
        assert socket and exec_id == "exec-1"
        ours, engine = _socketpair()
        process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.processes.append(process)

        def from_output(stream: Any, kind: int) -> None:
            # The session's end may come first (a deadline): what is left is dropped.
            with stream, contextlib.suppress(OSError):
                while chunk := stream.read1(4096):
                    frame = bytes([kind, 0, 0, 0]) + struct.pack(">I", len(chunk)) + chunk
                    engine.sendall(frame)

        outputs = [
            threading.Thread(target=from_output, args=(process.stdout, 1), daemon=True),
            threading.Thread(target=from_output, args=(process.stderr, 2), daemon=True),
        ]

        def to_stdin() -> None:
            assert process.stdin is not None
            # The session's end closes our side, unread output in it or not (ECONNRESET here),
            # and the client may be gone first (EPIPE): either way its stdin closes.
            try:
                with contextlib.suppress(OSError):
                    while chunk := engine.recv(4096):
                        process.stdin.write(chunk)
                        process.stdin.flush()
                with contextlib.suppress(OSError):
                    process.stdin.close()
                for output in outputs:
                    output.join(timeout=10)
            finally:
                engine.close()

        for thread in [*outputs, threading.Thread(target=to_stdin, daemon=True)]:
            thread.start()
        return TimeoutlessSocket(ours) if self.ignores_timeouts else ours


class TimeoutlessSocket:
    """A socket whose reads ignore settimeout."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock_ = sock

    def settimeout(self, _: float) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock_, name)


def _socketpair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair()


@contextlib.contextmanager
def runtime_api(
    servers: dict[str, str], **options: Any
) -> Iterator[tuple[FakeRuntimeApi, LocalProxy]]:
    api = FakeRuntimeApi(servers, **options)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    local = LocalProxy(api.server_address[1])
    try:
        yield api, local
    finally:
        api.shutdown()
        api.server_close()
        for process in local.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1)
            process.kill()
            process.wait(timeout=5)


STEADY = {"app": "no check", "blue": "MAINT", "green": "MAINT"}


def test_a_pin_sets_a_free_slot_before_the_cut_and_the_cut_waits_for_the_drain() -> None:
    with runtime_api(STEADY) as (api, local):
        prepared = proxy.prepare(local, "10.0.0.7")
        # Nothing moved: the slot's address only.
        assert api.commands == ["show stat app 4 -1", "set server app/blue addr 10.0.0.7 port 8080"]
        assert api.status == STEADY
        proxy.cut(prepared)
        assert api.status == {"app": "MAINT", "blue": "no check", "green": "MAINT"}
        assert api.commands[2:5] == [
            "set server app/blue state ready",
            "set server app/app state maint",
            "set server app/green state maint",
        ]
        # One line at the cut: the drain's first reading comes with the switch itself.
        assert api.lines[2] == ";".join([*api.commands[2:5], "show stat app 4 -1"])
        # It returned only once the old server's sessions had ended, polling in between.
        assert api.sessions["app"] == 0
        polls = api.commands[5:]
        assert len(polls) >= 2 and set(polls) == {"show stat app 4 -1"}
        # The session's client ended with the session.
        assert local.processes[0].wait(timeout=5) == 0


def test_back_to_the_service_sets_its_address_and_may_skip_the_drain() -> None:
    pinned = {"app": "MAINT", "blue": "no check", "green": "MAINT"}
    with runtime_api(pinned) as (api, local):
        proxy.switch(local, None, service_address="10.0.0.8", wait=False)
        assert api.status == {"app": "no check", "blue": "MAINT", "green": "MAINT"}
        assert api.commands == [
            "show stat app 4 -1",
            "set server app/app addr 10.0.0.8 port 8080",
            "set server app/app state ready",
            "set server app/blue state maint",
            "set server app/green state maint",
        ]


def test_the_drain_has_a_deadline() -> None:
    with runtime_api(STEADY, drain_s=None) as (api, local):
        with pytest.raises(DeadlineExceeded) as raised:
            proxy.switch(local, "10.0.0.7", timeout_s=0.3)
        assert "still served requests" in raised.value.message and "app (3)" in raised.value.message
        assert raised.value.untouched == "the proxy sends new requests to 10.0.0.7"
        assert api.status["blue"] == "no check"


def test_a_proxy_without_deploytools_servers_is_left_alone() -> None:
    with runtime_api({"web1": "no check"}) as (api, local):
        with pytest.raises(CheckFailed, match="its config is not deploytools'") as raised:
            proxy.prepare(local, "10.0.0.7")
        assert raised.value.untouched == "the proxy was not changed"
        assert api.commands == ["show stat app 4 -1"]


def test_a_refused_address_moves_nothing() -> None:
    with runtime_api(STEADY) as (api, local):
        api.fail["addr"] = "Invalid addr.\n"
        with pytest.raises(ExternalCommandFailed, match="Invalid addr") as raised:
            proxy.prepare(local, "10.0.0.7")
        assert raised.value.untouched == "the proxy sends the traffic where it did"
        assert api.status == STEADY


def test_an_unreachable_runtime_api_is_a_clear_error() -> None:
    with runtime_api(STEADY) as (api, local):
        api.shutdown()
        api.server_close()
        with pytest.raises(ExternalCommandFailed, match="refused the connection"):
            proxy.prepare(local, "10.0.0.7")


@pytest.mark.parametrize("bad", ["app", "10.0.0", "10.0.0.7; rm"])
def test_a_pin_is_an_ipv4_address(bad: str) -> None:
    with pytest.raises(ValueError):
        proxy.prepare(SimpleNamespace(), bad)


class NetworkedContainer:
    def __init__(self, name: str, networks: dict[str, dict[str, str]]) -> None:
        self.name = name
        self.attrs = {"NetworkSettings": {"Networks": networks}}
        self.reloaded = False

    def reload(self) -> None:
        self.reloaded = True


def test_a_pin_names_the_address_on_the_network_shared_with_the_proxy() -> None:
    gateway = NetworkedContainer("p_proxy_1", {"p_default": {"IPAddress": "172.20.0.2"}})
    app = NetworkedContainer(
        "p_app_2",
        {"other": {"IPAddress": "10.0.0.9"}, "p_default": {"IPAddress": "172.20.0.5"}},
    )
    assert proxy.address(app, gateway) == "172.20.0.5" and app.reloaded
    alone = NetworkedContainer("p_app_3", {"other": {"IPAddress": "10.0.0.9"}})
    with pytest.raises(CheckFailed, match="shares no network with the proxy"):
        proxy.address(alone, gateway)


def info(expand_only: bool | None) -> ImageInfo:
    return ImageInfo(ref="rbac:2", id="sha256:x", version="2", expand_only=expand_only)


def test_rolling_is_refused_unless_the_release_is_expand_only() -> None:
    assert deploy_rolling.refusal(info(True), "production") is None
    for value, why in [(False, "not expand-only"), (None, "does not declare")]:
        refused = deploy_rolling.refusal(info(value), "production")
        assert isinstance(refused, UsageError)
        assert why in refused.message and "refused" in refused.message
        assert refused.untouched == "nothing was done"
        assert "recreate" in (refused.hint or "") and "maintenance window" in (refused.hint or "")


def test_rolling_is_a_registered_strategy() -> None:
    strategy: Any = deploy_step.STRATEGIES["rolling"]()
    assert strategy.name == "rolling"
    assert isinstance(strategy, deploy_rolling.RollingStrategy)


def test_up_beside_the_running_containers() -> None:
    cli = compose.ComposeCli(prefix=("docker-compose",), version="1.29.2")
    argv = compose.up(
        cli, "p", ["f.yml"], ["app"], no_deps=True, no_recreate=True, scale={"app": 2}
    )
    assert argv[argv.index("up") :] == [
        "up",
        "--detach",
        "--no-deps",
        "--no-recreate",
        "--scale",
        "app=2",
        "app",
    ]


class FakeGateway:
    """The proxy container: records what ran in it, exits with `code`."""

    name = "dtroll_proxy_1"

    def __init__(self, code: int) -> None:
        self.code, self.argv = code, []

    def exec(self, argv: list[str], *, timeout_s: float) -> ExecResult:
        self.argv = argv
        said = b"3 of 48 requests did not answer 200" if self.code else b""
        return ExecResult(self.code, said, b"")


def rolling_settings(port: int = 8000, path: str = "/healthz") -> Any:
    from deploytools.proxy_settings import HealthAnswer

    return SimpleNamespace(app_port=port, health=HealthAnswer(path, 200, True))


def test_warm_sends_concurrent_health_requests_from_the_proxy() -> None:
    gateway = FakeGateway(0)
    deploy_rolling.warm(SimpleNamespace(name="app_2"), gateway, "10.0.0.7", rolling_settings())
    assert gateway.argv[:2] == ["bash", "-c"]
    assert gateway.argv[3:] == [
        "bash",
        "10.0.0.7",
        "8000",
        "/healthz",
        "200",
        str(deploy_rolling.WARM_CONCURRENCY),
        str(deploy_rolling.WARM_ROUNDS),
    ]


def test_a_failed_warm_up_fails_the_release_before_the_switch() -> None:
    with pytest.raises(CheckFailed, match=r"warming dtroll_app_2 up failed.*did not answer 200"):
        deploy_rolling.warm(
            SimpleNamespace(name="dtroll_app_2"), FakeGateway(1), "10.0.0.7", rolling_settings()
        )


def test_switches_on_a_callers_session_share_its_one_exec_and_leave_it_open() -> None:
    with runtime_api(STEADY) as (api, local):
        session = proxy.RuntimeApi(local)
        proxy.switch(local, "10.0.0.7", session=session)
        proxy.switch(local, "10.0.0.8", session=session)
        proxy.switch(local, None, service_address="10.0.0.8", wait=False, session=session)
        (client,) = local.processes
        assert client.poll() is None  # still there for the next switch
        assert api.status == STEADY
        assert [c for c in api.commands if "addr" in c] == [
            "set server app/blue addr 10.0.0.7 port 8080",
            "set server app/green addr 10.0.0.8 port 8080",
            "set server app/app addr 10.0.0.8 port 8080",
        ]
        session.close()
        assert client.wait(timeout=5) == 0


@pytest.mark.parametrize("ignores_timeouts", [False, True])
def test_an_api_that_does_not_answer_is_given_up_at_the_deadline(ignores_timeouts: bool) -> None:
    with runtime_api(STEADY) as (api, local):
        api.delay_s = 5.0
        local.ignores_timeouts = ignores_timeouts
        session = proxy.RuntimeApi(local, timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="did not answer 'show stat app 4 -1'"):
            proxy.read_servers(session)
        # Not the fake's 5 s: the read was given up (by the watchdog when timeouts are ignored).
        assert time.monotonic() - started < 4.0
        session.close()


def test_rolling_is_refused_before_anything_when_the_proxy_cannot_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deploytools.proxy_settings import ComposeApp

    found = SimpleNamespace(app=ComposeApp(services=frozenset({"proxy"})), compose_service="proxy")
    monkeypatch.setattr(proxy, "settings", lambda target: found)
    monkeypatch.setattr(proxy, "switch_refusal", lambda target, resolved=None: None)
    with runtime_api({"web1": "no check"}) as (api, local):
        proxy_config = SimpleNamespace(proxy=SimpleNamespace(compose_service="proxy"))
        target = SimpleNamespace(
            name="production", config=proxy_config, running=lambda service: [local]
        )
        config = SimpleNamespace(deploy=SimpleNamespace(health_timeout_s=5))
        session: Any = SimpleNamespace(target=target, ctx=SimpleNamespace(config=config))
        with pytest.raises(UsageError) as raised:
            deploy_rolling.RollingStrategy().admit(session, info(True))
        assert raised.value.message.startswith("rolling deploy to production refused: ")
        assert "its config is not deploytools'" in raised.value.message
        assert raised.value.untouched == "nothing was done"
        assert api.commands == ["show stat app 4 -1"]
