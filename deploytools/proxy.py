"""The reverse proxy in front of the app: HAProxy, deploytools' own part.

It is either a container deploytools starts and owns for the environment (`start_owned`: no
proxy service needed in the app's Compose files; attached to the project's network, publishing
the environment's port), or, when the Compose files define one (docker-compose.prod.yml's
`proxy` service), that service. Either runs the config `render` writes.

Traffic is switched through HAProxy's runtime API, without a reload: no process starts or
stops in the proxy, no client connection is closed, and a request in flight finishes where it
began. The proxy's backend `app` has three servers (`render`):

- `app`, the app service's name, resolved by Docker's DNS: the steady state, which also
  follows a recreate deploy's new container;
- two slots, `blue` and `green`, disabled until a rolling deploy or a rollback pins traffic to
  one container's address.

One server is in the `ready` state, the others in `maint`. A switch is prepared (`prepare`:
the runtime API session opened, the servers read, the target's address set while it takes no
traffic) and then cut (`cut`: one line of commands readies the target and puts the others in
maintenance, then the others are watched until their last session ended, i.e. they are
drained). The runtime API listens on 127.0.0.1 inside the proxy container only; deploytools
reaches it through one `docker exec` per switch whose stdin stays attached (`RuntimeApi`), so
the cut itself is a write on an open socket: it starts no process anywhere (measured on 2
cores: a `docker exec` costs the machine about 60 ms of CPU, CPU taken from the requests being
switched).
"""

from __future__ import annotations

import contextlib
import csv
import ipaddress
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from deploytools import proxy_settings
from deploytools.engine.client import ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL, Container, OneOff
from deploytools.engine.errors import EngineError, ImageNotFound
from deploytools.errors import (
    CheckFailed,
    DeadlineExceeded,
    EnvironmentUnreachable,
    ExternalCommandFailed,
    UsageError,
)
from deploytools.proxy_settings import HealthAnswer, ProxySettings
from deploytools.target import Target, wait_until_healthy

#: The Compose service a stack's files may define as the proxy ([proxy] compose_service).
PROXY_SERVICE = "proxy"
#: The port the app listens on inside the network when nothing else says: the last default
#: of `[proxy] app_port` (proxy_settings.resolve gives the environment's).
APP_PORT = proxy_settings.DEFAULT_APP_PORT
#: deploytools' own proxy container: its service label (it belongs to the Compose project, so
#: `status` lists it and `down --remove-orphans` removes it), and a label naming it.
OWNED_SERVICE = "deploytools-proxy"
OWNED_LABEL = "deploytools.proxy"
#: HAProxy's runtime API inside the proxy container (never published).
ADMIN_PORT = 9999
BACKEND = "app"
#: The backend's server that follows the app service's name, and the two pinning slots.
SERVICE_SERVER = "app"
SLOTS = ("blue", "green")
#: The service's server follows Docker's DNS; it may start before the app (init-addr none).
SERVICE_SERVER_OPTIONS = "resolvers docker resolve-prefer ipv4 init-addr last,libc,none"
#: Docker's embedded DNS: the service's name resolves to its current container.
RESOLVER = "127.0.0.11:53"


#: What a service name may be: it is written into HAProxy's config as it is.
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_service_name(service: str) -> None:
    """ValueError unless `service` can be written into the config as it is."""
    if not SERVICE_NAME.fullmatch(service):
        raise ValueError(f"not a service name: {service!r}")


def head(*, connect_timeout_s: int, retries: int, retry_policy: tuple[str, ...] = ()) -> str:
    """The `global` and `defaults` sections, the same in both of deploytools' proxies (this
    module's and `proxy_swarm`'s, which runs the same image, command and healthcheck): the
    log, the runtime API on 127.0.0.1:ADMIN_PORT the switches use, the soft stop's bound and
    the client and server timeouts. The proxies differ in what a failed connect costs and how
    a request is retried, so each passes those (and says why, at its `render`)."""
    policy = "".join(f"    {line}\n" for line in retry_policy)
    return f"""\
global
    log stdout format raw local0 info
    stats socket ipv4@127.0.0.1:{ADMIN_PORT} level admin
    hard-stop-after 30s

defaults
    mode http
    log global
    option httplog
    timeout connect {connect_timeout_s}s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s
    retries {retries}
{policy}"""


#: The frontend of both proxies: every request to the backend BACKEND, but /proxy-health,
#: which the proxy answers itself (PROXY_HEALTHCHECK asks it).
FRONTEND = f"""\
frontend web
    bind :80
    http-request return status 200 content-type text/plain string "ok" if {{ path /proxy-health }}
    default_backend {BACKEND}
"""


def render(service: str = "app", *, app_port: int = APP_PORT) -> str:
    """The proxy's HAProxy config: every request to the app service `service`, its two slots
    disabled; /proxy-health answered by the proxy itself.

    While no app container exists (a recreate deploy's gap, an outage), requests fail fast
    with a 503 rather than hang: `hold nx 1s` drops the address a second after Docker's DNS
    stops answering for the name (HAProxy's default keeps it 30 s, and each request then spent
    its connect timeout on every try: 15 s with the default 5 s), and a connect that takes 2 s
    on a local bridge network goes to nobody. A failed connect is retried twice, on the same
    server (one name, or one pinned container: there is no other to redispatch to)."""
    check_service_name(service)
    slots = "".join(f"    server {slot} 127.0.0.1:{app_port} disabled\n" for slot in SLOTS)
    return f"""\
# Written by deploytools (deploytools/proxy.py). Switches happen through the runtime API
# (127.0.0.1:{ADMIN_PORT} in this container), not by editing this file.
{head(connect_timeout_s=2, retries=2)}
resolvers docker
    nameserver dns {RESOLVER}
    hold valid 1s
    hold nx 1s
    timeout resolve 1s
    accepted_payload_size 8192

{FRONTEND}
backend {BACKEND}
    server {SERVICE_SERVER} {service}:{app_port} {SERVICE_SERVER_OPTIONS}
{slots}"""


def settings(target: Target) -> ProxySettings:
    """The proxy's settings for `target`'s environment (deploy.toml, then the Compose files)."""
    return proxy_settings.resolve(target.config, target.environment)


def container(target: Target) -> Container | None:
    """The running proxy of the environment: the Compose files' proxy service, else
    deploytools' own container; None when neither runs (recreate only)."""
    service = target.config.proxy.compose_service
    running = (target.running(service) if service else []) or target.running(OWNED_SERVICE)
    return running[0] if running else None


def address(container: Container, proxy: Container) -> str:
    """`container`'s IPv4 address on a network it shares with the proxy.

    A pin names the address, not the container: HAProxy's slots take an address, and a name
    would be asked of the engine's DNS, busy with this very deploy."""
    container.reload()
    shared = proxy.attrs.get("NetworkSettings", {}).get("Networks") or {}
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    for name, network in sorted(networks.items()):
        if name in shared and network.get("IPAddress"):
            return str(network["IPAddress"])
    raise CheckFailed(
        f"{container.name} shares no network with the proxy {proxy.name}",
        hint="the app and the proxy must be services of one Compose project",
    )


def ensure_running(
    target: Target,
    *,
    timeout_s: float,
    unless_app_publishes: bool = False,
    resolved: ProxySettings | None = None,
) -> Container | None:
    """The environment's proxy, started when it does not run: the Compose files' proxy service
    when they define one, else deploytools' own container.

    `unless_app_publishes`: None instead of starting deploytools' own when the app service
    publishes a host port itself (a recreate deploy of a stack not put behind the proxy yet:
    the port is the app's; `deploytools proxy start` adopts it, docs/zero-downtime.md).
    `resolved`: the environment's settings when the caller has them (else read here, only
    when the proxy does not run)."""
    running = container(target)
    if running is not None:
        return running
    resolved = resolved or settings(target)
    if resolved.compose_service:
        target.start([resolved.compose_service], what="starting the proxy")
        started = container(target)
        if started is None:
            raise CheckFailed(f"the proxy of environment {target.name} did not start")
        wait_until_healthy(started, timeout_s=timeout_s)
        return started
    if unless_app_publishes and resolved.app.published:
        return None
    return start_owned_proxy(target, resolved, timeout_s=timeout_s)


def switch_refusal(target: Target, resolved: ProxySettings | None = None) -> str | None:
    """Why the traffic of `target` cannot be switched between two app containers (a rolling
    deploy's start beside), in words; None when it can. Reads the Compose files only: whether
    the proxy runs deploytools' config is read by the deploy itself (`read_servers`)."""
    resolved = resolved or settings(target)
    if resolved.app.published and not resolved.compose_service:
        ports = ", ".join(str(p) for p in resolved.app.published)
        return (
            f"the app service {target.config.project.app_service} publishes host port {ports} "
            "itself, so a second container of it cannot start beside the first"
        )
    return None


#: The proxy answers /proxy-health itself; bash's /dev/tcp: the image has no HTTP client.
PROXY_HEALTHCHECK = [
    "CMD",
    "bash",
    "-c",
    "exec 3<>/dev/tcp/127.0.0.1/80 && printf 'GET /proxy-health HTTP/1.0\\r\\n\\r\\n' >&3 "
    "&& read -r status <&3 && [[ $status == *' 200 '* ]]",
]
#: How the proxy's config reaches it: an environment variable written to a file at start (the
#: official image runs HAProxy as an unprivileged user: /tmp is writable).
PROXY_COMMAND = [
    "sh",
    "-c",
    "printf '%s' \"$DEPLOYTOOLS_PROXY_CONF\" > /tmp/haproxy.cfg "
    "&& exec haproxy -db -f /tmp/haproxy.cfg",
]


def owned_name(target: Target) -> str:
    return f"{target.project}-{OWNED_SERVICE}"


def owned_spec(target: Target, resolved: ProxySettings, network: str) -> OneOff:
    """deploytools' own proxy container for `target`: an HAProxy of `resolved.image` on
    `network`, publishing `resolved.publish` on its port 80, restarted with the engine."""
    host, port = resolved.publish
    return OneOff(
        image=resolved.image,
        name=owned_name(target),
        command=PROXY_COMMAND,
        environment=[
            "DEPLOYTOOLS_PROXY_CONF="
            + render(target.config.project.app_service, app_port=resolved.app_port)
        ],
        labels={
            PROJECT_LABEL: target.project,
            SERVICE_LABEL: OWNED_SERVICE,
            ONEOFF_LABEL: "False",
            OWNED_LABEL: "owned",
        },
        network=network,
        publish_fixed={"80/tcp": (host, port)},
        restart="unless-stopped",
        # A soft stop (both images' stop signal): sessions in flight finish.
        stop_signal="SIGUSR1",
        healthcheck={
            "test": PROXY_HEALTHCHECK,
            "interval_s": 2,
            "timeout_s": 3,
            "retries": 3,
            "start_period_s": 5,
        },
    )


def project_network(target: Target) -> str:
    """The network deploytools' own proxy joins: the app's (or, before the first app
    container, the database's), the project's default network first."""
    config = target.config.project
    for service in (config.app_service, config.database_service, None):
        names: set[str] = set()
        for found in target.running(service) if service else target.containers():
            names |= set((found.attrs.get("NetworkSettings", {}).get("Networks") or {}).keys())
        if names:
            default = f"{target.project}_default"
            return default if default in names else sorted(names)[0]
    raise EnvironmentUnreachable(
        f"environment {target.name} runs no container of {target.project} whose network "
        "the proxy could join",
        untouched="no proxy was started",
        hint="start the stack's database first (a deploy does)",
    )


def start_owned_proxy(target: Target, resolved: ProxySettings, *, timeout_s: float) -> Container:
    """Start deploytools' own proxy for `target` and wait until it is healthy. A stopped one
    left from before is replaced."""
    host, port = resolved.publish
    if port in resolved.app.published:
        raise UsageError(
            f"the proxy of environment {target.name} cannot publish port {port}: the app "
            f"service {target.config.project.app_service} publishes it itself",
            untouched="no proxy was started; the app serves as it did",
            hint=f'give the proxy another port ([proxy.ports] {target.name} = "PORT"), move '
            "the traffic to it, then remove the app's `ports` (docs/zero-downtime.md, adopting)",
        )
    network = project_network(target)
    engine = target.engine
    for stale in target.containers(OWNED_SERVICE):
        with contextlib.suppress(EngineError):
            stale.remove(force=True)
    try:
        started = engine.run(owned_spec(target, resolved, network))
    except ImageNotFound:
        raise EnvironmentUnreachable(
            f"the proxy's image {resolved.image} is not on the engine of {target.name}",
            untouched="no proxy was started",
            hint="pull it there, or name another in [proxy] image (or $PROXY_IMAGE)",
        ) from None
    except EngineError as error:
        raise ExternalCommandFailed(
            f"the proxy of environment {target.name} did not start "
            f"(image {resolved.image}, port {host + ':' if host else ''}{port}): {error}",
            untouched="no proxy was started",
            hint="is the port taken? set [proxy.ports] in deploy.toml",
        ) from error
    wait_until_healthy(started, timeout_s=timeout_s)
    return started


#: The runtime API client, run in the proxy container with its stdin attached: each line read
#: is one connection to the API (non-interactive mode: HAProxy answers and closes), its answer
#: printed, then END and the status (0 answered, 1 the API refused the connection). bash for
#: /dev/tcp (the official haproxy image and tests/infra/haproxy have it, neither has socat);
#: only builtins run per command. $1 the API's port. It ends when stdin closes.
CLIENT_SCRIPT = r"""
port=$1
while IFS= read -r command; do
    if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
        printf '%s\n' "$command" >&3
        while IFS= read -r line <&3 || [ -n "$line" ]; do printf '%s\n' "$line"; done
        exec 3<&-
        printf '@@END 0\n'
    else
        printf '@@END 1\n'
    fi
done
"""
END = b"@@END "


def client_argv() -> list[str]:
    return ["bash", "-c", CLIENT_SCRIPT, "bash", str(ADMIN_PORT)]


class RuntimeApi:
    """A session with HAProxy's runtime API: one exec of CLIENT_SCRIPT in the proxy container
    whose stdin and stdout stay attached. `ask` writes a command line and reads its answer
    (the engine's stream: 8-byte frame headers, stdout and stderr); every read has a deadline.
    """

    def __init__(self, proxy: Container, *, timeout_s: float = 10.0) -> None:
        self.proxy, self.timeout_s = proxy, timeout_s
        self._session = proxy.exec_attached(client_argv())
        self.exec_id = self._session.exec_id
        # The raw socket under the engine's hijacked HTTP connection; read here with deadlines.
        self.socket: Any = self._session.socket
        self._stdout = b""
        self._stderr = b""
        self.expired = False  # the watchdog ended the session

    def ask(self, command: str, *, timeout_s: float | None = None) -> str:
        """The API's answer to `command` (one line; `;` separates several commands)."""
        if "\n" in command:
            raise ValueError(f"one line only: {command!r}")
        allowed = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + allowed
        # Socket timeouts bound the reads on the engine's local socket; the SDK's ssh socket
        # (a pipe to `ssh`) ignores them, so a watchdog ends the session a second after the
        # deadline if a read is still blocked then.
        watchdog = threading.Timer(allowed + 1.0, self._expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._ask(command, deadline)
        finally:
            watchdog.cancel()

    def _expire(self) -> None:
        self.expired = True
        # A shutdown wakes a read blocked in another thread (a close alone does not, on Linux).
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        self.close()

    def _ask(self, command: str, deadline: float) -> str:
        try:
            self.socket.sendall(command.encode() + b"\n")
        except OSError as error:
            raise ExternalCommandFailed(
                f"the runtime API session in {self.proxy.name} broke: {error}"
            ) from error
        while True:
            at = self._stdout.find(END)
            if at != -1 and (at == 0 or self._stdout[at - 1 : at] == b"\n"):
                stop = self._stdout.find(b"\n", at)
                if stop != -1:
                    answer, status = self._stdout[:at], self._stdout[at + len(END) : stop]
                    self._stdout = self._stdout[stop + 1 :]
                    if status.strip() != b"0":
                        raise ExternalCommandFailed(
                            f"HAProxy's runtime API (127.0.0.1:{ADMIN_PORT} in "
                            f"{self.proxy.name}) refused the connection",
                            hint="the proxy must run docker-compose.prod.yml's HAProxy config "
                            "(deploytools.proxy.render)",
                        )
                    return answer.decode("utf-8", "replace")
            self._read_frame(deadline, command)

    def _read_frame(self, deadline: float, command: str) -> None:
        header = self._read_exactly(8, deadline, command)
        stream, size = header[0], struct.unpack(">I", header[4:])[0]
        payload = self._read_exactly(size, deadline, command)
        if stream == 2:
            self._stderr += payload
        else:
            self._stdout += payload

    def _read_exactly(self, size: int, deadline: float, command: str) -> bytes:
        data = b""
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(
                    f"HAProxy's runtime API in {self.proxy.name} did not answer {command!r} in time"
                )
            self.socket.settimeout(left)
            try:
                chunk = self.socket.recv(size - len(data))
            except TimeoutError:
                continue
            except OSError as error:  # socket.timeout is TimeoutError from Python 3.10
                if self.expired:
                    continue
                raise ExternalCommandFailed(
                    f"the runtime API session in {self.proxy.name} broke: {error}"
                ) from error
            if not chunk and self.expired:
                continue
            if not chunk:
                said = self._stderr.decode("utf-8", "replace").strip()[-300:]
                raise ExternalCommandFailed(
                    f"the runtime API session in {self.proxy.name} ended before answering "
                    f"{command!r}" + (f": {said}" if said else ""),
                    hint="the proxy image needs bash (the official haproxy image has it)",
                )
            data += chunk
        return data

    def close(self) -> None:
        """End the session: stdin closes, the client in the container exits."""
        self._session.close()


@dataclass(frozen=True)
class ServerState:
    """One server of the backend, from `show stat` (keyed by its name)."""

    status: str  # "no check" (ready, unchecked), "MAINT", "MAINT (resolution)", "DRAIN", "UP"...
    sessions: int  # scur: requests being served
    queued: int  # qcur

    @property
    def serving(self) -> bool:
        return not self.status.startswith("MAINT")


def parse_stat(text: str) -> dict[str, ServerState]:
    """`show stat` CSV: the backend's servers by name (the frontend and BACKEND rows skipped)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise ExternalCommandFailed(f"HAProxy's `show stat` said {text.strip()[-300:]!r}")
    rows = csv.DictReader([lines[0][2:], *lines[1:]])
    servers: dict[str, ServerState] = {}
    for row in rows:
        if row.get("pxname") != BACKEND or row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        servers[row["svname"]] = ServerState(
            status=row.get("status") or "",
            sessions=int(row.get("scur") or 0),
            queued=int(row.get("qcur") or 0),
        )
    return servers


#: The backend's servers (type 4), all of them (-1).
SHOW_STAT = f"show stat {BACKEND} 4 -1"


def read_servers(api: RuntimeApi, answer: str | None = None) -> dict[str, ServerState]:
    """The backend's servers: from `answer` (a `show stat` answer already read) or asked."""
    servers = parse_stat(api.ask(SHOW_STAT) if answer is None else answer)
    missing = [name for name in (SERVICE_SERVER, *SLOTS) if name not in servers]
    if missing:
        raise CheckFailed(
            f"the proxy {api.proxy.name} has no server {', '.join(missing)} in its backend "
            f"{BACKEND}: its config is not deploytools'",
            untouched="the proxy was not changed",
            hint="run the proxy service of docker-compose.prod.yml (its config is "
            "deploytools.proxy.render's)",
        )
    return servers


def choose_server(servers: dict[str, ServerState], pin: str | None) -> str:
    """The server that takes the traffic: SERVICE_SERVER when `pin` is None, else a slot that
    takes none now (the serving one keeps serving until the cut)."""
    if pin is None:
        return SERVICE_SERVER
    for slot in SLOTS:
        if not servers[slot].serving:
            return slot
    return SLOTS[0]  # both slots serve (never left so by a switch): the cut settles it


def cut_line(target: str, servers: dict[str, ServerState]) -> str:
    """One runtime API line: the target ready, every other server of the backend in
    maintenance (their sessions in flight finish: HAProxy sends them no new request)."""
    commands = [f"set server {BACKEND}/{target} state ready"]
    commands += [f"set server {BACKEND}/{name} state maint" for name in servers if name != target]
    return ";".join(commands)


@dataclass
class Prepared:
    """A switch ready to cut: the session open, the target's address set."""

    api: RuntimeApi
    upstream: str  # what it is, for messages: an address, or the service
    line: str  # the cut's commands
    drained: tuple[str, ...]  # the servers the cut waits for
    timeout_s: float
    wait: bool
    owned: bool  # the session was opened for this switch: the cut closes it


#: How often the cut reads the servers' sessions while they drain.
POLL_S = 0.05


def prepare(
    proxy: Container,
    pin: str | None,
    *,
    service_address: str | None = None,
    timeout_s: float = 60.0,
    wait: bool = True,
    session: RuntimeApi | None = None,
    app_port: int = APP_PORT,
) -> Prepared:
    """Get the switch ready: to the IPv4 address `pin` (a slot), or, `pin` None, back to the
    service's server (its address set to `service_address` when given, so that it does not
    wait for the DNS). Nothing moves until `cut`.

    `session`: an open runtime API session to use (the caller closes it; a rolling deploy
    makes all its switches on one, so its cut-over starts no exec); else one is opened here
    and closed by the cut. `wait=False`: the cut does not wait for the other servers to
    drain (only when they send to the same container as the target)."""
    for given in (pin, service_address):
        if given is not None:
            ipaddress.IPv4Address(given)  # ValueError: not an address
    api = session or RuntimeApi(proxy)
    try:
        servers = read_servers(api)
        target = choose_server(servers, pin)
        address = pin if pin is not None else service_address
        if address is not None:
            said = api.ask(f"set server {BACKEND}/{target} addr {address} port {app_port}")
            if not re.match(r"(IP changed|no need to change|nothing changed)", said, re.I) and (
                said.strip()
            ):
                raise ExternalCommandFailed(
                    f"setting the proxy's server {target} to {address} failed: "
                    f"{said.strip()[-300:]}",
                    untouched="the proxy sends the traffic where it did",
                )
        elif not servers[target].serving and "resolution" in servers[target].status:
            raise CheckFailed(
                f"the proxy cannot resolve the app service's name ({servers[target].status})",
                untouched="the proxy sends the traffic where it did",
            )
    except BaseException:
        if session is None:
            api.close()
        raise
    drained = tuple(name for name in servers if name != target)
    upstream = pin if pin is not None else f"the service ({service_address or 'by DNS'})"
    line = cut_line(target, servers)
    return Prepared(api, upstream, line, drained, timeout_s, wait, session is None)


def cut(prepared: Prepared) -> None:
    """Move the traffic (one line on the open session) and, unless told not to wait, return
    once the other servers' last sessions ended. Closes the session when `prepare` opened it."""
    api = prepared.api
    try:
        # The drain's first reading rides on the cut's own line: one round trip through the
        # engine at the moment of the cut, not two (measured: an ask costs 2 ms and about
        # 3 ms of CPU across dockerd, the shim, bash and HAProxy, on the cores that serve the
        # requests being switched).
        said = api.ask(f"{prepared.line};{SHOW_STAT}" if prepared.wait else prepared.line)
        # Each command's answer ends with an empty line; `set server` says nothing when done.
        applied, header, stat = said.partition("# pxname")
        if applied.strip():
            raise ExternalCommandFailed(
                f"switching the proxy {api.proxy.name} to {prepared.upstream} failed: "
                f"{applied.strip()[-300:]}",
                untouched=f"some of the commands may have been applied: {prepared.line}",
            )
        if not prepared.wait:
            return
        deadline = time.monotonic() + prepared.timeout_s
        answer: str | None = (header + stat) or None  # no reading in it: ask
        while True:
            servers = read_servers(api, answer)
            answer = None
            busy = [
                f"{name} ({servers[name].sessions + servers[name].queued})"
                for name in prepared.drained
                if servers[name].sessions or servers[name].queued
            ]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise DeadlineExceeded(
                    f"the proxy's previous servers {', '.join(busy)} still served requests "
                    f"{prepared.timeout_s:.0f} s after the switch to {prepared.upstream}",
                    untouched=f"the proxy sends new requests to {prepared.upstream}",
                    hint=f"look at `docker logs {api.proxy.name}`",
                )
            time.sleep(POLL_S)
    finally:
        if prepared.owned:
            api.close()


def switch(
    proxy: Container,
    pin: str | None,
    *,
    service_address: str | None = None,
    timeout_s: float = 60.0,
    wait: bool = True,
    session: RuntimeApi | None = None,
    app_port: int = APP_PORT,
) -> None:
    """`prepare` then `cut`: the traffic to `pin` (an address) or back to the service."""
    cut(
        prepare(
            proxy,
            pin,
            service_address=service_address,
            timeout_s=timeout_s,
            wait=wait,
            session=session,
            app_port=app_port,
        )
    )


# -- Asking the app, from the proxy --------------------------------------------------------
#
# A new container's health route is asked from the proxy container, over the project's
# network, with bash's /dev/tcp: the app's image needs no python3, curl or shell of its own
# (the proxy's image has bash: the runtime API client needs it too).

#: One request; prints the answer (status line, headers, body). $1 address, $2 port, $3 path.
ASK_SCRIPT = r"""
exec 3<>"/dev/tcp/$1/$2" || exit 3
printf 'GET %s HTTP/1.0\r\nHost: %s:%s\r\nUser-Agent: deploytools\r\nConnection: close\r\n\r\n' \
    "$3" "$1" "$2" >&3
while IFS= read -r -t 10 line <&3 || [ -n "$line" ]; do printf '%s\n' "$line"; line=; done
"""

#: Rounds of concurrent requests; exits 1 saying how many did not answer the status $4.
#: $1 address, $2 port, $3 path, $4 status, $5 concurrency, $6 rounds.
WARM_SCRIPT = r"""
one() {
    local want=$4 status line
    exec 3<>"/dev/tcp/$1/$2" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$3" "$1" "$2" >&3
    IFS= read -r -t 10 status <&3 || return 1
    while IFS= read -r -t 10 line <&3; do :; done
    set -- ${status%$'\r'}
    [ "$2" = "$want" ]
}
failed=0
for ((round = 0; round < $6; round++)); do
    pids=()
    for ((i = 0; i < $5; i++)); do one "$1" "$2" "$3" "$4" & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
done
if [ "$failed" -ne 0 ]; then
    printf '%s of %s requests did not answer %s\n' "$failed" $(($5 * $6)) "$4"
    exit 1
fi
"""


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


def ask_argv(address: str, port: int, path: str) -> list[str]:
    ipaddress.ip_address(address)  # ValueError: not an address
    return ["bash", "-c", ASK_SCRIPT, "bash", address, str(port), path]


def warm_argv(
    address: str, port: int, health: HealthAnswer, *, concurrency: int, rounds: int
) -> list[str]:
    ipaddress.ip_address(address)
    values = (address, str(port), health.path, str(health.status), str(concurrency), str(rounds))
    return ["bash", "-c", WARM_SCRIPT, "bash", *values]


def parse_answer(output: str) -> Answer | None:
    """An HTTP/1.x answer as ASK_SCRIPT prints it; None when there is none."""
    head, _, body = output.replace("\r\n", "\n").partition("\n\n")
    words = head.split("\n", 1)[0].split()
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        return None
    return Answer(int(words[1]), body.rstrip("\n"))


def ask(proxy: Container, address: str, port: int, path: str, *, timeout_s: float) -> Answer:
    """GET `path` of the app at `address`:`port`, from the proxy container."""
    result = proxy.exec(ask_argv(address, port, path), timeout_s=timeout_s)
    text = result.output().decode("utf-8", "replace")
    answer = parse_answer(text)
    if answer is None:
        said = text.strip()[-300:] or f"nothing (exit {result.exit_code})"
        raise CheckFailed(
            f"{address}:{port}{path} gave no HTTP answer to the proxy {proxy.name}: {said}",
            hint="is the app listening on that port? ([proxy] app_port)",
        )
    return answer


def warm(
    proxy: Container,
    address: str,
    port: int,
    health: HealthAnswer,
    *,
    concurrency: int,
    rounds: int,
    timeout_s: float,
) -> None:
    """`rounds` of `concurrency` concurrent requests to the health route, from the proxy;
    CheckFailed when one did not answer the expected status."""
    argv = warm_argv(address, port, health, concurrency=concurrency, rounds=rounds)
    result = proxy.exec(argv, timeout_s=timeout_s)
    if result.exit_code != 0:
        text = result.output().decode("utf-8", "replace").strip()
        raise CheckFailed(
            f"warming {address}:{port} up failed (exit {result.exit_code}): "
            f"{text[-300:] or 'no output'}"
        )
