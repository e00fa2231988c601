"""The reverse proxy in front of the app (docker-compose.prod.yml's `proxy` service, nginx).

The proxy's server config names one upstream host: the app service's name (Docker's DNS then
answers with the app container) in the steady state, or one container's address (`address`)
while a rolling deploy or a rollback switches traffic. A switch is prepared (`prepare`: one
`docker exec` writes the rendered file into the proxy container and tests it with `nginx -t`,
and a detached one waits for the old workers) and then cut (`cut`: nginx reloaded by a SIGHUP
through the engine): nginx starts workers with the new config and lets the old ones finish
their in-flight requests, so no request is dropped. `switch` returns only after every old
worker has exited, so no request can reach the previous upstream afterwards.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
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


def container(target: Target) -> Any | None:
    """The running proxy container of the environment, or None (no proxy: recreate only)."""
    for found in target.containers(PROXY_SERVICE):
        if found.status == "running":
            return found
    return None


def address(container: Any, proxy: Any) -> str:
    """`container`'s IPv4 address on a network it shares with the proxy, else its name.

    A pin names the address rather than the container: nginx resolves a name through Docker's
    embedded DNS (in the engine) whenever its cached answer is older than `valid` and on each
    new worker's first request, and during a switch the engine is busy (starting the new
    container, stopping the old one, the exec of the switch itself): requests waited for
    those answers."""
    container.reload()
    shared = proxy.attrs.get("NetworkSettings", {}).get("Networks") or {}
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    for name, network in sorted(networks.items()):
        if name in shared and network.get("IPAddress"):
            return str(network["IPAddress"])
    return str(container.name)


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


#: Both scripts' list of nginx's workers: their PIDs in $found (the title nginx gives a worker;
#: one shutting down after a reload reads "nginx: worker process is shutting down").
_WORKERS = r"""
workers() {
    found=
    for d in "$proc"/[0-9]*; do
        c=
        { read -r c < "$d/cmdline"; } 2>/dev/null
        case $c in "nginx: worker process"*) found="$found ${d##*/}" ;; esac
    done
}
"""

#: A switch is prepared, then cut. The cut is the moment the traffic moves, so it makes the
#: engine do as little as possible: measured on 2 cores, a `docker exec` costs the machine about
#: 60 ms of CPU (dockerd, containerd, a runc start), the kill API about 15 ms, an exec's
#: inspection 2-3 ms; CPU taken from the requests being switched.
#:
#: PREPARE_SCRIPT, one synchronous exec before the cut. POSIX sh (Debian's dash, Alpine's ash);
#: $1 the config file, $2 the new config. Writes and tests it (`nginx -t`): exit 10 the file
#: could not be written; 11 nginx refused it (the previous file is put back, the running config
#: keeps serving). Then prints "workers: PID..." (the workers of the running config, the ones
#: the cut waits for) and "pid1: master" when the container's PID 1 is the nginx master (the
#: engine's kill API then reloads it), else "pid1: other". Nothing reloads until the cut, so
#: the running config keeps serving. /proc is read with `read` (a builtin): neither image has
#: ps. DEPLOYTOOLS_PROC (unset in the proxy) points the unit tests at a fake /proc.
PREPARE_SCRIPT = (
    _WORKERS
    + r"""
conf=$1 text=$2 proc=${DEPLOYTOOLS_PROC:-/proc}
had=0
if [ -f "$conf" ]; then cp -p "$conf" "$conf.previous" || exit 10; had=1; fi
printf '%s' "$text" > "$conf.new" && mv -f "$conf.new" "$conf" || exit 10
if ! nginx -t -q; then
    if [ $had = 1 ]; then mv -f "$conf.previous" "$conf"; else rm -f "$conf"; fi
    exit 11
fi
rm -f "$conf.previous"
workers
echo "workers:$found"
c=
{ read -r c < "$proc/1/cmdline"; } 2>/dev/null
case $c in "nginx: master process"*) echo "pid1: master" ;; *) echo "pid1: other" ;; esac
"""
)

#: WAIT_SCRIPT, a detached exec started by `prepare`, so that the cut starts no process: $1 the
#: deadline in seconds, then the PIDs of the old workers. Exit 0 once none of them runs a worker
#: any more (each finished its in-flight requests after the reload) and a worker runs; 13 old
#: workers still ran at the deadline. Polls /proc with builtins every 50 ms (forks only `sleep`).
WAIT_SCRIPT = (
    _WORKERS
    + r"""
limit=$1; shift; old=$*; proc=${DEPLOYTOOLS_PROC:-/proc}
clock() {  # hundredths of a second since boot, without a fork
    read -r up _ < /proc/uptime
    now=$(( ${up%.*} * 100 + 1${up#*.} - 100 ))
}
clock
end=$(( now + limit * 100 ))
while :; do
    left=
    for p in $old; do
        c=
        { read -r c < "$proc/$p/cmdline"; } 2>/dev/null
        case $c in "nginx: worker process"*) left="$left $p" ;; esac
    done
    if [ -z "$left" ]; then
        workers
        [ -n "$found" ] && exit 0
    fi
    clock
    [ "$now" -ge "$end" ] && exit 13
    sleep 0.05
done
"""
)

#: How often the cut asks the engine whether the waiter has finished.
POLL_S = 0.05


@dataclass(frozen=True)
class Prepared:
    """A switch ready to cut: the new config written and tested, the waiter running."""

    proxy: Any
    upstream: str
    old_workers: tuple[str, ...]
    master_is_pid1: bool
    waiter: str | None  # the waiter's exec ID; None: the cut does not wait
    timeout_s: float


def prepare_argv(upstream: str, *, config_path: str = CONFIG_PATH) -> list[str]:
    """The synchronous exec of `prepare`: the rendered config for `upstream` as an argument."""
    return ["sh", "-c", PREPARE_SCRIPT, "sh", config_path, render(upstream)]


def wait_argv(old_workers: tuple[str, ...], *, timeout_s: float) -> list[str]:
    return ["sh", "-c", WAIT_SCRIPT, "sh", str(max(1, math.ceil(timeout_s))), *old_workers]


def prepare(proxy: Any, upstream: str, *, timeout_s: float = 60.0, wait: bool = True) -> Prepared:
    """Write and test the config for `upstream` and start the waiter; nothing reloads yet. A
    config nginx refuses raises here, and the running config keeps serving. `cut` must follow
    (the waiter's deadline, `timeout_s`, runs from now).

    `wait=False` (no waiter; the cut returns once nginx is signalled) only when the old and
    the new upstream are the same container, e.g. its address and the service's name once it
    alone answers to that name: the old workers' requests go where the new ones' do."""
    argv = prepare_argv(upstream)
    code, output = proxy.exec_run(argv)
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    if code != 0:
        what = {
            10: f"writing {CONFIG_PATH}",
            11: "testing the proxy config (nginx -t; the running config keeps serving)",
        }.get(code, "preparing the proxy's switch")
        raise ExternalCommandFailed(
            f"{what} failed in {proxy.name} (exit {code}): {text.strip()[-300:] or 'no output'}",
            facts={"argv": [*argv[:2], "<script>", *argv[3:5]]},
        )
    said = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if "workers" not in said or "pid1" not in said:
        raise ExternalCommandFailed(
            f"preparing the proxy's switch in {proxy.name} said {text.strip()[-300:]!r}, not "
            "its workers and PID 1"
        )
    old = tuple(said["workers"].split())
    waiter = None
    if wait:
        api = proxy.client.api
        waiter = str(api.exec_create(proxy.id, wait_argv(old, timeout_s=timeout_s))["Id"])
        api.exec_start(waiter, detach=True)
    return Prepared(proxy, upstream, old, said["pid1"].strip() == "master", waiter, timeout_s)


def cut(prepared: Prepared, *, clock: Any = time.monotonic, sleep: Any = time.sleep) -> None:
    """Reload the proxy onto the prepared config and return once no worker of the old config
    is left. A SIGHUP through the engine's kill API when nginx is the container's PID 1 (no
    process started), else `nginx -s reload` in an exec."""
    proxy = prepared.proxy
    if prepared.master_is_pid1:
        proxy.kill(signal="SIGHUP")
    else:
        code, output = proxy.exec_run(["nginx", "-s", "reload"])
        if code != 0:
            text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
            raise ExternalCommandFailed(
                f"reloading the proxy failed in {proxy.name} (exit {code}): "
                f"{str(text).strip()[-300:] or 'no output'}",
                untouched=f"the proxy's config file names {prepared.upstream}; the running "
                "config was not replaced",
            )
    if prepared.waiter is None:
        return
    api = proxy.client.api
    # The waiter ends by itself at its deadline; this one only bounds an engine that stops
    # answering about it.
    deadline = clock() + prepared.timeout_s + 10
    while True:
        state = api.exec_inspect(prepared.waiter)
        if not state.get("Running") and state.get("ExitCode") is not None:
            break
        if clock() > deadline:
            state = {"ExitCode": 13}
            break
        sleep(POLL_S)
    code = state["ExitCode"]
    if code == 0:
        return
    if code == 13:
        raise DeadlineExceeded(
            f"the proxy's old workers ({' '.join(prepared.old_workers)}) did not finish within "
            f"{prepared.timeout_s:.0f} s after the switch to {prepared.upstream}",
            untouched=f"the proxy's new config (upstream {prepared.upstream}) is in place",
            hint=f"look at `docker logs {proxy.name}`",
        )
    raise ExternalCommandFailed(
        f"waiting for the proxy's old workers failed in {proxy.name} (exit {code})"
    )


def switch(proxy: Any, upstream: str, *, timeout_s: float = 60.0, wait: bool = True) -> None:
    """Point the proxy at `upstream` and return once no worker of the old config is left (each
    finished its in-flight requests): `prepare` then `cut`. The config is tested before the
    reload: a bad one leaves the running config serving (and the previous file in place).
    `wait=False`: see `prepare`."""
    cut(prepare(proxy, upstream, timeout_s=timeout_s, wait=wait))
