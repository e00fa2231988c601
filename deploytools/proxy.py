"""The reverse proxy in front of the app (docker-compose.prod.yml's `proxy` service, nginx).

The proxy's server config names one upstream host: the app service's name (Docker's DNS then
answers with the app container) in the steady state, or one container's name while a rolling
deploy or a rollback switches traffic. Switching = writing the rendered file into the proxy
container and `nginx -s reload`: nginx starts workers with the new config and lets the old ones
finish their in-flight requests, so no request is dropped. `switch` returns only after every
old worker has exited, so no request can reach the previous upstream afterwards.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable
from typing import Any

from deploytools.commands import compose
from deploytools.errors import CheckFailed, DeadlineExceeded, ExternalCommandFailed
from deploytools.target import Target, wait_until_healthy

#: The Compose service of the proxy, and the port the app listens on inside the network.
PROXY_SERVICE = "proxy"
APP_PORT = 8080
CONFIG_PATH = "/etc/nginx/conf.d/default.conf"
#: Docker's embedded DNS: a service or container name resolves to its current address, so a
#: recreated app container (another address) is found within `valid`.
RESOLVER = "127.0.0.11"


def render(upstream: str, *, app_port: int = APP_PORT) -> str:
    """The proxy's server config forwarding every request to `upstream:app_port`.

    The upstream is a variable so nginx resolves it at request time (with Docker's DNS) rather
    than once at start: the proxy starts before the app and survives the app's recreation.
    """
    if not upstream or any(c in upstream for c in ' ;"{}$\\\n'):
        raise ValueError(f"not a host name: {upstream!r}")
    return f"""\
# Written by deploytools (deploytools/proxy.py); replaced on a rolling switch.
resolver {RESOLVER} valid=1s ipv6=off;
server {{
    listen 80;
    location = /proxy-health {{
        access_log off;
        return 200 "ok\\n";
    }}
    location / {{
        set $app_upstream "{upstream}";
        proxy_pass http://$app_upstream:{app_port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout 60s;
    }}
}}
"""


def config_archive(text: str, *, name: str = "default.conf") -> bytes:
    """A tar holding one file, for the engine's put_archive."""
    data = text.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def worker_pids(ps_output: str) -> set[int]:
    """PIDs of nginx workers from `pid cmdline` lines (the exec in `_workers`)."""
    pids = set()
    for line in ps_output.splitlines():
        pid, _, cmdline = line.strip().partition(" ")
        if pid.isdigit() and cmdline.startswith("nginx: worker process"):
            pids.add(int(pid))
    return pids


# Neither image has ps: read /proc. One line per process, "PID CMDLINE".
_PS = [
    "sh",
    "-c",
    'for d in /proc/[0-9]*; do printf "%s %s\\n" "${d#/proc/}" '
    '"$(tr "\\000" " " < "$d/cmdline" 2>/dev/null)"; done',
]


def container(target: Target) -> Any | None:
    """The running proxy container of the environment, or None (no proxy: recreate only)."""
    for found in target.containers(PROXY_SERVICE):
        if found.status == "running":
            return found
    return None


def defined(target: Target) -> bool:
    """Whether the Compose files define the proxy service."""
    done = target.compose(compose.service_names, what="listing the Compose services")
    return PROXY_SERVICE in done.stdout.split()


def ensure_running(target: Target, *, timeout_s: float) -> Any | None:
    """Start the proxy when the files define it and it does not run (a first deploy); None when
    there is no proxy service."""
    running = container(target)
    if running is not None or not defined(target):
        return running
    target.compose(
        lambda cli, project, files: compose.up(cli, project, files, [PROXY_SERVICE], no_deps=True),
        what="starting the proxy",
    )
    started = container(target)
    if started is None:
        raise CheckFailed(f"the proxy of environment {target.name} did not start")
    wait_until_healthy(started, timeout_s=timeout_s)
    return started


def _exec(proxy: Any, argv: list[str], what: str) -> str:
    code, output = proxy.exec_run(argv)
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    if code != 0:
        raise ExternalCommandFailed(
            f"{what} failed in {proxy.name} (exit {code}): {text.strip()[-300:] or 'no output'}",
            facts={"argv": argv},
        )
    return text


def switch(
    proxy: Any,
    upstream: str,
    *,
    timeout_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Point the proxy at `upstream` and return once no worker of the old config is left (each
    finished its in-flight requests). The config is tested before the reload: a bad one leaves
    the running config serving."""
    before = worker_pids(_exec(proxy, _PS, "listing nginx workers"))
    if not proxy.put_archive("/etc/nginx/conf.d", config_archive(render(upstream))):
        raise ExternalCommandFailed(f"writing {CONFIG_PATH} into {proxy.name} failed")
    _exec(proxy, ["nginx", "-t", "-q"], "testing the proxy config")
    _exec(proxy, ["nginx", "-s", "reload"], "reloading the proxy")
    deadline = clock() + timeout_s
    while True:
        now = worker_pids(_exec(proxy, _PS, "listing nginx workers"))
        if now and not (now & before):
            return
        if clock() >= deadline:
            raise DeadlineExceeded(
                f"the proxy's old workers did not finish within {timeout_s:.0f} s after the "
                f"switch to {upstream}",
                untouched=f"the proxy's new config (upstream {upstream}) is in place",
                hint=f"look at `docker logs {proxy.name}`",
            )
        sleep(0.1)
