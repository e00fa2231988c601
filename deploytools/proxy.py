"""The reverse proxy in front of the app (docker-compose.prod.yml's `proxy` service, nginx).

The proxy's server config names one upstream host: the app service's name (Docker's DNS then
answers with the app container) in the steady state, or one container's address (`address`)
while a rolling deploy or a rollback switches traffic. Switching = writing the rendered file
into the proxy container, testing it (`nginx -t`) and `nginx -s reload`, all in one `docker
exec` (SWITCH_SCRIPT): nginx starts workers with the new config and lets the old ones finish
their in-flight requests, so no request is dropped. `switch` returns only after every old
worker has exited, so no request can reach the previous upstream afterwards.
"""

from __future__ import annotations

import math
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


#: The whole switch in one `docker exec` (each exec costs the engine a runc start: on 2 busy
#: cores, the list-write-test-reload-poll sequence of 7-10 execs was CPU taken from the requests
#: being switched). POSIX sh (Debian's dash, Alpine's ash); $1 the config file, $2 the deadline
#: in seconds, $3 the new config. Exit 0 once every worker of the old config has exited (each
#: finished its in-flight requests) and a new one runs; 10 the file could not be written; 11
#: `nginx -t` refused the new config (the previous file is put back, the running config keeps
#: serving); 12 the reload failed; 13 old workers were still running at the deadline.
#: /proc is read with `read` (a builtin): neither image has ps, and the polling forks only
#: `sleep`. DEPLOYTOOLS_PROC (unset in the proxy) points the unit tests at a fake /proc.
SWITCH_SCRIPT = r"""
conf=$1 limit=$2 text=$3 proc=${DEPLOYTOOLS_PROC:-/proc}
workers() {
    found=
    for d in "$proc"/[0-9]*; do
        c=
        { read -r c < "$d/cmdline"; } 2>/dev/null
        case $c in "nginx: worker process"*) found="$found ${d##*/}" ;; esac
    done
}
workers
old=$found
had=0
if [ -f "$conf" ]; then cp -p "$conf" "$conf.previous" || exit 10; had=1; fi
printf '%s' "$text" > "$conf.new" && mv -f "$conf.new" "$conf" || exit 10
if ! nginx -t -q; then
    if [ $had = 1 ]; then mv -f "$conf.previous" "$conf"; else rm -f "$conf"; fi
    exit 11
fi
rm -f "$conf.previous"
nginx -s reload || exit 12
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
    if [ "$now" -ge "$end" ]; then
        echo "old workers still running:$left" >&2
        exit 13
    fi
    sleep 0.05
done
"""


def switch_argv(upstream: str, *, timeout_s: float, config_path: str = CONFIG_PATH) -> list[str]:
    """The one exec of `switch`: the rendered config for `upstream` passed as an argument."""
    return [
        "sh",
        "-c",
        SWITCH_SCRIPT,
        "sh",
        config_path,
        str(max(1, math.ceil(timeout_s))),
        render(upstream),
    ]


def switch(proxy: Any, upstream: str, *, timeout_s: float = 60.0) -> None:
    """Point the proxy at `upstream` and return once no worker of the old config is left (each
    finished its in-flight requests). The config is tested before the reload: a bad one leaves
    the running config serving (and the previous file in place)."""
    argv = switch_argv(upstream, timeout_s=timeout_s)
    code, output = proxy.exec_run(argv)
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    said = text.strip()[-300:] or "no output"
    if code == 0:
        return
    if code == 13:
        raise DeadlineExceeded(
            f"the proxy's old workers did not finish within {timeout_s:.0f} s after the "
            f"switch to {upstream} ({said})",
            untouched=f"the proxy's new config (upstream {upstream}) is in place",
            hint=f"look at `docker logs {proxy.name}`",
        )
    what = {
        10: f"writing {CONFIG_PATH}",
        11: "testing the proxy config (nginx -t; the running config keeps serving)",
        12: "reloading the proxy",
    }.get(code, "switching the proxy")
    raise ExternalCommandFailed(
        f"{what} failed in {proxy.name} (exit {code}): {said}",
        facts={"argv": [*argv[:2], "<script>", *argv[3:6]]},
    )
