"""A real Docker Swarm on this machine for the `swarm` tier: docker-in-docker nodes.

Each node is a container `dtsw-node-N` of the image `deploytools-swarm-node:bookworm` (built here
once from the local debian:bookworm-slim and Debian's docker.io), on the bridge network `dtsw-net`
of the machine's engine, its /var/lib/docker on the volume `dtsw-node-N-docker` (overlay2 works
there: the volume is on the machine's ext4, not on the container's overlay). Its dockerd listens
on its unix socket and on tcp://0.0.0.0:2375, plain HTTP, reached only on the private bridge.

`--privileged` is refused on these machines (no CAP_SYS_RESOURCE); the nodes run with every other
capability and without seccomp/apparmor confinement instead (NODE_RUN_FLAGS). The kernel has no
IPVS: the ingress mesh and VIP endpoints do not answer, so tests use `endpoint_mode: dnsrr` on
attachable overlays and host-mode published ports.

    cluster = ensure_cluster()          # reuses a healthy running cluster: a rerun is fast
    cluster.load_images("dte2e/rbac-api:1.15.4")
    cluster.docker(cluster.manager, "service", "ls")
    remove_cluster()                    # containers, volumes, network

Every node is a manager (MANAGERS): a stopped node then leaves a quorum of 2 of 3 and the others
take its tasks (benchmarks/RESULTS.md has the figures against 1 manager and 2 workers). Any node
may stop; while the first is stopped, `cluster.manager` does not answer, `control_node()` (the
first running manager, which the drain/stop/start calls use) does. Images go in by `docker save`
once and `docker load` on each node, twice as fast here as a registry the nodes pull from; the
nodes still accept plain HTTP registries on dtsw-net (`--insecure-registry` its subnet).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

NODE_IMAGE = "deploytools-swarm-node:bookworm"
BASE_IMAGE = "debian:bookworm-slim"
NETWORK = "dtsw-net"
NODE_PREFIX = "dtsw-node-"
#: Label on every container, volume and network of the cluster (remove_cluster finds them by it).
LABEL = "deploytools.test=swarm-cluster"
#: How many of the nodes are managers (the first ones). 3 of 3: any one node may stop.
MANAGERS = 3
#: The manager notices a stopped node after a few heartbeats; Docker's default is 5 s.
HEARTBEAT = "2s"

# dockerd as PID 1's child (tini reaps the shims' orphans). `--tls=false` says plain TCP on
# purpose: without it dockerd 20.10 sleeps 15 s at start to show a warning.
DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      docker.io iptables ca-certificates tini procps iproute2 \\
 && rm -rf /var/lib/apt/lists/*
VOLUME /var/lib/docker
EXPOSE 2375
ENTRYPOINT ["tini", "--", "dockerd", "-H", "unix:///var/run/docker.sock", \\
            "-H", "tcp://0.0.0.0:2375", "--tls=false"]
"""

#: What a dind node needs in place of --privileged (refused here), measured on this machine.
NODE_RUN_FLAGS = (
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "systempaths=unconfined",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    # /run afresh at each start: a stopped node's docker.pid and containerd's sockets would keep
    # its dockerd from starting again.
    "--tmpfs",
    "/run",
)
#: dockerd's arguments besides the entrypoint's (the node's name goes in its cgroup parent).
DOCKERD_ARGS = ("--storage-driver", "overlay2")
#: Label on the node image and the nodes: what they were made from. A running cluster made by
#: another version of this module is rebuilt rather than reused.
CONFIG_LABEL = "deploytools.test.swarm-config"

T = TypeVar("T")


class SwarmClusterError(RuntimeError):
    """The cluster could not be built, reached or changed as asked."""


class NodeExited(SwarmClusterError):
    """A node's container stopped while it was waited for (waiting longer would not help)."""


@dataclass(frozen=True)
class SwarmNode:
    name: str  # container name, also the node's hostname: dtsw-node-1
    address: str  # its IP on dtsw-net
    docker_host: str  # "tcp://<address>:2375" (its engine; test-only, on a private bridge)


def _run(args: list[str], *, timeout_s: float = 120, stdin: bytes | None = None) -> str:
    try:
        done = subprocess.run(
            args, input=stdin, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SwarmClusterError(
            f"`{' '.join(args)}` did not finish within {timeout_s:.0f}s"
        ) from exc
    if done.returncode != 0:
        raise SwarmClusterError(
            f"`{' '.join(args)}` failed ({done.returncode}): "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    return done.stdout.decode(errors="replace")


def _host_docker(*args: str, timeout_s: float = 120) -> str:
    return _run(["docker", *args], timeout_s=timeout_s)


def wait_for(what: str, probe: Callable[[], T | None], *, timeout_s: float) -> T:
    """Poll probe() until it returns a value (not None/False); its exceptions count as not yet."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    interval = 0.2
    while True:
        try:
            value = probe()
            if value:
                return value
        except NodeExited:
            raise
        except (SwarmClusterError, ValueError, KeyError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise SwarmClusterError(
                f"timed out after {timeout_s:.0f}s waiting for {what}"
                + (f" (last error: {last})" if last else "")
            )
        time.sleep(interval)
        interval = min(interval * 1.5, 1.0)


@dataclass
class SwarmCluster:
    nodes: list[SwarmNode]  # nodes[0] is the manager (the others: managers too, MANAGERS)
    managers: int = MANAGERS  # the first `managers` nodes are managers, the others workers
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def manager(self) -> SwarmNode:
        return self.nodes[0]

    def node(self, name: str) -> SwarmNode:
        return next(node for node in self.nodes if node.name == name)

    def docker(self, node: SwarmNode, *args: str, timeout_s: float = 120) -> str:
        """The docker CLI against a node's engine; its stdout. Raises SwarmClusterError."""
        return _run(["docker", "-H", node.docker_host, *args], timeout_s=timeout_s)

    # ---- the nodes as the swarm sees them -------------------------------------------------------

    def control_node(self) -> SwarmNode:
        """The first running manager (nodes[0] unless a test stopped it)."""
        for node in self.nodes[: self.managers]:
            if _container_running(node.name):
                return node
        raise SwarmClusterError("no manager of the swarm is running")

    def node_states(self) -> dict[str, dict[str, str]]:
        """hostname -> {state, availability, role} as the managers see them."""
        out = self.docker(
            self.control_node(),
            "node",
            "ls",
            "--format",
            "{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}",
            timeout_s=20,
        )
        states: dict[str, dict[str, str]] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                states[parts[0]] = {
                    "state": parts[1].lower(),
                    "availability": parts[2].lower(),
                    "manager": parts[3].lower() if len(parts) > 3 else "",
                }
        return states

    def running_tasks(self, node: SwarmNode) -> list[str]:
        """Names of the tasks the managers want running on `node`."""
        out = self.docker(
            self.control_node(),
            "node",
            "ps",
            node.name,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Name}}",
            timeout_s=20,
        )
        return out.split()

    def wait_ready(self, *, timeout_s: float = 60) -> None:
        """Until every running node is Ready and Active in the managers' view."""

        def ready() -> bool:
            states = self.node_states()
            return all(
                states.get(node.name, {}).get("state") == "ready"
                for node in self.nodes
                if _container_running(node.name)
            )

        wait_for("every running node Ready", ready, timeout_s=timeout_s)

    # ---- changes ------------------------------------------------------------------------------

    def drain(self, node: SwarmNode, *, timeout_s: float = 60) -> None:
        """Availability drain; returns when no task is wanted there and its containers stopped."""
        self.docker(self.control_node(), "node", "update", "--availability", "drain", node.name)

        def empty() -> bool:
            if self.running_tasks(node):
                return False
            if not _container_running(node.name):
                return True
            containers = self.docker(
                node, "ps", "-q", "--filter", "label=com.docker.swarm.task.id", timeout_s=20
            )
            return not containers.split()

        wait_for(f"{node.name} drained", empty, timeout_s=timeout_s)

    def activate(self, node: SwarmNode, *, timeout_s: float = 30) -> None:
        self.docker(self.control_node(), "node", "update", "--availability", "active", node.name)
        wait_for(
            f"{node.name} active",
            lambda: self.node_states()[node.name]["availability"] == "active",
            timeout_s=timeout_s,
        )

    def stop_node(self, node: SwarmNode, *, timeout_s: float = 60) -> None:
        """Stop the node's container; returns when the other managers see it Down."""
        _host_docker("stop", "-t", "10", node.name, timeout_s=timeout_s)
        if not any(_container_running(other.name) for other in self.nodes[: self.managers]):
            return
        wait_for(
            f"{node.name} Down",
            lambda: self.node_states()[node.name]["state"] == "down",
            timeout_s=timeout_s,
        )

    def start_node(self, node: SwarmNode, *, timeout_s: float = 90) -> None:
        """Start the node's container; returns when its engine answers and it is Ready again."""
        _host_docker("start", node.name, timeout_s=timeout_s)
        _wait_engine(node, timeout_s=timeout_s)
        wait_for(
            f"{node.name} Ready",
            lambda: self.node_states()[node.name]["state"] == "ready",
            timeout_s=timeout_s,
        )

    def load_images(self, *refs: str, timeout_s: float = 600) -> None:
        """Copy images from the machine's engine into every running node (`docker save` once,
        `docker load` on each node in parallel); a node that already has the image ID is skipped."""
        for ref in refs:
            image_id = _host_docker("image", "inspect", "-f", "{{.Id}}", ref).strip()
            missing = [
                node
                for node in self.nodes
                if _container_running(node.name) and self._image_id(node, ref) != image_id
            ]
            if not missing:
                continue
            with tempfile.TemporaryDirectory(prefix="dtsw-load-") as tmp:
                archive = str(Path(tmp) / "image.tar")
                _run(["docker", "save", "-o", archive, ref], timeout_s=timeout_s)
                with ThreadPoolExecutor(max_workers=len(missing)) as pool:
                    loads = [
                        pool.submit(
                            self.docker, node, "load", "-q", "-i", archive, timeout_s=timeout_s
                        )
                        for node in missing
                    ]
                    for load in loads:
                        load.result()

    def _image_id(self, node: SwarmNode, ref: str) -> str:
        try:
            return self.docker(node, "image", "inspect", "-f", "{{.Id}}", ref, timeout_s=20).strip()
        except SwarmClusterError:
            return ""


# ---- the cluster's life -----------------------------------------------------------------------


def _container_running(name: str) -> bool:
    try:
        return _host_docker("inspect", "-f", "{{.State.Running}}", name, timeout_s=20).strip() == (
            "true"
        )
    except SwarmClusterError:
        return False


def _wait_engine(node: SwarmNode, *, timeout_s: float) -> None:
    """Until the node's dockerd answers; fails at once, with its last logs, if it exited."""

    def answers() -> str:
        if not _container_running(node.name):
            logs = subprocess.run(
                ["docker", "logs", "--tail", "20", node.name],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            raise NodeExited(f"{node.name} exited: {(logs.stdout + logs.stderr).strip()}")
        return _run(
            ["docker", "-H", node.docker_host, "version", "--format", "{{.Server.Version}}"],
            timeout_s=10,
        ).strip()

    wait_for(f"{node.name}'s engine", answers, timeout_s=timeout_s)


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _image_config() -> str:
    return _digest(DOCKERFILE)


def _cluster_config(size: int, managers: int) -> str:
    return _digest(_image_config(), NODE_RUN_FLAGS, DOCKERD_ARGS, HEARTBEAT, size, managers)


def _label(name: str, *, kind: str) -> str:
    try:
        return _host_docker(
            kind, "inspect", "-f", f'{{{{index .Config.Labels "{CONFIG_LABEL}"}}}}', name
        ).strip()
    except SwarmClusterError:
        return ""


def ensure_node_image() -> None:
    """Build NODE_IMAGE from the local base image, once per machine (about 40 s) and again when
    DOCKERFILE changes."""
    if _label(NODE_IMAGE, kind="image") == _image_config():
        return
    label = f"{CONFIG_LABEL}={_image_config()}"
    _run(
        ["docker", "build", "-t", NODE_IMAGE, "--label", LABEL, "--label", label, "-"],
        stdin=DOCKERFILE.encode(),
        timeout_s=900,
    )


def _node_names(size: int) -> list[str]:
    return [f"{NODE_PREFIX}{index}" for index in range(1, size + 1)]


def _network_subnet() -> ipaddress.IPv4Network:
    out = _host_docker("network", "inspect", "-f", "{{json .IPAM.Config}}", NETWORK)
    return ipaddress.IPv4Network(json.loads(out)[0]["Subnet"])


def _create_network() -> None:
    """dtsw-net with a subnet of its own (`--ip` needs a configured one): the engine picks a free
    subnet for a first network, which is then made again with that subnet stated."""
    _host_docker("network", "create", "--label", LABEL, NETWORK)
    subnet = _network_subnet()
    _host_docker("network", "rm", NETWORK)
    _host_docker("network", "create", "--label", LABEL, "--subnet", str(subnet), NETWORK)


def _node_addresses(size: int) -> list[str]:
    """Fixed addresses on dtsw-net (.11, .12, ...): a restarted node keeps its address."""
    subnet = _network_subnet()
    return [str(subnet.network_address + 10 + index) for index in range(1, size + 1)]


def _nodes(size: int) -> list[SwarmNode]:
    names = _node_names(size)
    return [
        SwarmNode(name=name, address=address, docker_host=f"tcp://{address}:2375")
        for name, address in zip(names, _node_addresses(size), strict=True)
    ]


def _existing_cluster(size: int, managers: int) -> SwarmCluster | None:
    """The running cluster when this module's version made it and it is whole and healthy."""
    names = _node_names(size)
    config = _cluster_config(size, managers)
    if not all(_label(name, kind="container") == config for name in names):
        return None
    if not all(_container_running(name) for name in names):
        return None
    try:
        cluster = SwarmCluster(nodes=_nodes(size), managers=managers)
        states = cluster.node_states()
    except (SwarmClusterError, ValueError, KeyError, IndexError):
        return None
    healthy = set(states) == set(names) and all(
        state["state"] == "ready" and state["availability"] == "active" for state in states.values()
    )
    return cluster if healthy else None


def _start_node_container(node: SwarmNode, config: str) -> None:
    volume = f"{node.name}-docker"
    _host_docker("volume", "create", "--label", LABEL, volume)
    _host_docker(
        "run",
        "-d",
        "--name",
        node.name,
        "--hostname",
        node.name,
        "--label",
        LABEL,
        "--label",
        f"{CONFIG_LABEL}={config}",
        "--network",
        NETWORK,
        "--ip",
        node.address,
        *NODE_RUN_FLAGS,
        "-v",
        f"{volume}:/var/lib/docker",
        NODE_IMAGE,
        *DOCKERD_ARGS,
        # Plain HTTP to a registry on dtsw-net (the machine's address on it is the gateway).
        "--insecure-registry",
        str(_network_subnet()),
        # The nodes share the machine's cgroup tree: each keeps its containers apart.
        "--cgroup-parent",
        f"/{node.name}",
    )


def ensure_cluster(size: int = 3, *, managers: int = MANAGERS) -> SwarmCluster:
    """A swarm of `size` nodes, the first `managers` of them managers: the running one when this
    module made it and it is whole and healthy (a rerun takes a second), else built afresh."""
    existing = _existing_cluster(size, managers)
    if existing is not None:
        return existing
    remove_cluster()
    timings: dict[str, float] = {}
    started = time.monotonic()
    ensure_node_image()
    timings["node_image_s"] = time.monotonic() - started
    started = time.monotonic()
    _create_network()
    nodes = _nodes(size)
    for node in nodes:
        _start_node_container(node, _cluster_config(size, managers))
    for node in nodes:
        _wait_engine(node, timeout_s=60)
    timings["engines_s"] = time.monotonic() - started
    cluster = SwarmCluster(nodes=nodes, managers=managers, timings=timings)
    manager = nodes[0]
    cluster.docker(
        manager,
        "swarm",
        "init",
        "--advertise-addr",
        manager.address,
        "--listen-addr",
        f"{manager.address}:2377",
        "--dispatcher-heartbeat",
        HEARTBEAT,
    )
    tokens = {
        role: cluster.docker(manager, "swarm", "join-token", "-q", role).strip()
        for role in ("manager", "worker")
    }
    for index, node in enumerate(nodes[1:], start=1):
        role = "manager" if index < managers else "worker"
        cluster.docker(
            node,
            "swarm",
            "join",
            "--token",
            tokens[role],
            "--advertise-addr",
            node.address,
            "--listen-addr",
            f"{node.address}:2377",
            f"{manager.address}:2377",
        )
    cluster.wait_ready(timeout_s=60)
    timings["form_s"] = time.monotonic() - started
    return cluster


def remove_cluster() -> None:
    """Every container, volume and network of the cluster (by its label and names)."""
    labelled = _host_docker("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}")
    named = _host_docker("ps", "-a", "--format", "{{.Names}}")
    names = set(labelled.split()) | {n for n in named.split() if n.startswith(NODE_PREFIX)}
    if names:
        _host_docker("rm", "-f", "-v", *sorted(names), timeout_s=120)
    volumes = set(_host_docker("volume", "ls", "-q", "--filter", f"label={LABEL}").split())
    volumes |= {
        name
        for name in _host_docker("volume", "ls", "-q").split()
        if name.startswith(NODE_PREFIX) and name.endswith("-docker")
    }
    if volumes:
        _host_docker("volume", "rm", "-f", *sorted(volumes), timeout_s=120)
    networks = _host_docker("network", "ls", "-q", "--filter", f"name=^{NETWORK}$").split()
    if networks:
        _host_docker("network", "rm", *networks)
    _remove_cgroups()


def _remove_cgroups() -> None:
    """The nodes' cgroups (--cgroup-parent /dtsw-node-N in the machine's cgroup v1 tree): a node
    removed with its containers running leaves their cgroups behind, empty. Deepest first; one
    still in use (a node of a cluster running) is left."""
    root = Path("/sys/fs/cgroup")
    if not root.is_dir():
        return
    found = [path for path in root.glob(f"*/{NODE_PREFIX}*") if path.is_dir()]
    for top in found:
        for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                with contextlib.suppress(OSError):
                    path.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def keep_cluster() -> bool:
    """DTSW_KEEP_CLUSTER=1 keeps the cluster after a test session (for a fast rerun)."""
    return os.environ.get("DTSW_KEEP_CLUSTER", "") == "1"
