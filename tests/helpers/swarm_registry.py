"""A registry the test cluster pulls from and the machine's engine pushes to, under one name.

    with cluster_registry(cluster, port=18450, root=tmp) as registry:
        registry.repository("dtswe/rbac-api")   # "127.0.0.1:18450/dtswe/rbac-api"

Debian's docker-registry (distribution 2.8, installed by scripts/bootstrap) listens on the
machine's address on dtsw-net, where the nodes reach it. An engine talks plain HTTP only to the
registries it is told are insecure: the nodes are told dtsw-net's subnet
(tests/helpers/swarm_cluster.py), the machine's engine only knows its default, 127.0.0.0/8. A
release must be pulled by the very reference it was pushed as (its digest names it; the
registry's address is part of the name), so the registry is reached as 127.0.0.1:PORT
everywhere: on the machine and inside every node, Docker's own userland proxy (`docker-proxy`,
in Debian's docker.io on both) forwards 127.0.0.1:PORT to it. In real life the registry has
one name every host resolves, with TLS; this stands in for that.

Everything started here is stopped by its process ID at the end; the images pushed to it are
removed from the machine's engine and from the nodes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.helpers.swarm_cluster import NETWORK, SwarmCluster, SwarmClusterError

#: Docker's userland proxy in the nodes (Debian's docker.io). Its fd 3 must be open: it writes
#: its start signal there for dockerd, then closes it (with fd 3 closed, its listening socket
#: would get that number and be closed).
DOCKER_PROXY = "/usr/sbin/docker-proxy"


def host_docker_proxy() -> str:
    """docker-proxy on the machine: Debian's docker.io has it in /usr/sbin, Docker's packages
    in /usr/bin or /usr/libexec/docker."""
    for candidate in (DOCKER_PROXY, "/usr/bin/docker-proxy", "/usr/libexec/docker/docker-proxy"):
        if Path(candidate).is_file():
            return candidate
    found = shutil.which("docker-proxy")
    assert found, "docker-proxy is missing: it comes with the Docker engine (docker.io)"
    return found


@dataclass
class ClusterRegistry:
    cluster: SwarmCluster
    port: int
    #: The machine's address on dtsw-net: where the registry listens.
    gateway: str
    #: node name -> the forwarder's process ID inside it
    forwarders: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def repository(self, name: str) -> str:
        return f"{self.address}/{name}"

    def ensure_forwarders(self) -> None:
        """A forwarder in every running node (a node restarted since has lost its own)."""
        for node in self.cluster.nodes:
            pid = self.forwarders.get(node.name)
            if pid is not None and _node_sh(node.name, f"kill -0 {pid}", check=False) == 0:
                continue
            out = _node_out(
                node.name,
                f"nohup {DOCKER_PROXY} -proto tcp -host-ip 127.0.0.1 -host-port {self.port} "
                f"-container-ip {self.gateway} -container-port {self.port} "
                ">/dev/null 2>&1 3>/dev/null & echo $!",
            )
            self.forwarders[node.name] = int(out.strip())
        # The registry answers through each forwarder, from inside the node (bash's /dev/tcp:
        # the node image has no HTTP client).
        ask = (
            f"exec 3<>/dev/tcp/127.0.0.1/{self.port} && printf 'GET /v2/ HTTP/1.0\\r\\n\\r\\n' >&3"
            " && read -r status <&3 && [[ $status == *' 200 '* ]]"
        )
        for node in self.cluster.nodes:
            _wait(
                f"the registry from {node.name}",
                lambda n=node.name: _node_sh(n, ask, check=False) == 0,
            )

    def remove_images(self, repository: str) -> None:
        """The images of `repository` pulled by the nodes (best effort: a stopped node keeps
        its own until the next run)."""
        for node in self.cluster.nodes:
            with contextlib.suppress(SwarmClusterError):
                found = self.cluster.docker(
                    node, "images", "-q", "--no-trunc", "--filter", f"reference={repository}*"
                ).split()
                if found:
                    self.cluster.docker(node, "rmi", "-f", *set(found))


def _gateway() -> str:
    out = subprocess.run(
        ["docker", "network", "inspect", "-f", "{{json .IPAM.Config}}", NETWORK],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    config = json.loads(out)[0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.IPv4Network(config["Subnet"]).hosts()))


def _node_sh(node: str, script: str, *, check: bool = True) -> int:
    done = subprocess.run(
        ["docker", "exec", node, "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check and done.returncode != 0:
        raise SwarmClusterError(f"{script!r} in {node} exited {done.returncode}: {done.stderr}")
    return done.returncode


def _node_out(node: str, script: str) -> str:
    done = subprocess.run(
        ["docker", "exec", node, "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def _wait(what: str, probe: Callable[[], bool], *, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextlib.contextmanager
def cluster_registry(cluster: SwarmCluster, *, port: int, root: Path) -> Iterator[ClusterRegistry]:
    """The registry on dtsw-net, reached as 127.0.0.1:`port` on the machine and the nodes; its
    data under `root`."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is missing: scripts/bootstrap installs Debian's package"
    gateway = _gateway()
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '{gateway}:{port}'}}\n",
        encoding="utf-8",
    )
    started: list[subprocess.Popen[bytes]] = []
    registry = ClusterRegistry(cluster, port, gateway)
    try:
        server = subprocess.Popen(
            [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        started.append(server)
        _wait(
            "the registry",
            lambda: server.poll() is None and _answers(f"http://{gateway}:{port}/v2/"),
        )
        # The machine's engine pushes to 127.0.0.1:PORT (a plain-HTTP registry it accepts).
        forward = (
            f"exec {host_docker_proxy()} -proto tcp -host-ip 127.0.0.1 -host-port {port} "
            f"-container-ip {gateway} -container-port {port} 3>/dev/null"
        )
        started.append(
            subprocess.Popen(
                ["bash", "-c", forward], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
        _wait("the registry at 127.0.0.1", lambda: _answers(f"http://{registry.address}/v2/"))
        registry.ensure_forwarders()
        yield registry
    finally:
        for node, pid in registry.forwarders.items():
            _node_sh(node, f"kill {pid}", check=False)
        for process in reversed(started):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
