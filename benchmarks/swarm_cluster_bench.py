"""The swarm tier's test cluster (tests/helpers/swarm_cluster.py): what it costs and how it
behaves when a node stops.

    flock /tmp/dt-docker.lock .venv/bin/python benchmarks/swarm_cluster_bench.py \
        [--image dte2e/rbac-api:1.15.4] [--rebuild-image] [--managers 3] [--registry] [--keep]

Prints: the node image's build (with --rebuild-image; else whether it was there), the cluster's
forming (from no containers to 3 Ready nodes), a rerun of ensure_cluster (reuse), loading IMAGE
into the 3 nodes (`docker save` once, `docker load` on each in parallel) and again (skipped),
each node's memory idle and with a 3-replica service, and a stopped node: how long until the
others see it Down and until its task runs elsewhere, and its restart until Ready.
--registry also times the other way to get an image into the nodes: push to a local
docker-registry (Debian's, as the workflows tier runs it) that the nodes pull from. It measures,
it asserts nothing; the cluster is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import swarm_cluster as sc

SERVICE = "dtswn-bench"
SERVER = "while true; do sleep 1; done"


def timed(label: str, action):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    result = action()
    print(f"{label:<52} {time.monotonic() - started:7.1f} s", flush=True)
    return result


def node_memory() -> dict[str, str]:
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        line.split()[0]: line.split(maxsplit=1)[1].split(" / ")[0]
        for line in out.splitlines()
        if line.startswith(sc.NODE_PREFIX)
    }


def running(cluster: sc.SwarmCluster) -> list[tuple[str, str]]:
    """(node, current state) of each task the managers want running."""
    out = cluster.docker(
        cluster.control_node(),
        "service",
        "ps",
        SERVICE,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}}|{{.CurrentState}}",
    )
    return [tuple(line.split("|", 1)) for line in out.splitlines()]  # type: ignore[misc]


def settled(cluster: sc.SwarmCluster, *, without: str = "") -> bool:
    tasks = running(cluster)
    return (
        len(tasks) == 3
        and all(state.startswith("Running") for _, state in tasks)
        and without not in {node for node, _ in tasks}
    )


def stopped_node(cluster: sc.SwarmCluster) -> None:
    """Stop the last node; time its Down and its task's reschedule; start it again."""
    cluster.docker(
        cluster.manager,
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        SERVICE,
        "--replicas",
        "3",
        "--stop-grace-period",
        "1s",
        "debian:bookworm-slim",
        "sh",
        "-c",
        SERVER,
    )
    sc.wait_for("3 running tasks", lambda: settled(cluster), timeout_s=120)
    print("node memory with the service:", node_memory(), flush=True)
    victim = cluster.nodes[-1]
    started = time.monotonic()
    subprocess.run(["docker", "stop", "-t", "10", victim.name], check=True, capture_output=True)
    stop_s = time.monotonic() - started
    sc.wait_for(
        "Down",
        lambda: cluster.node_states()[victim.name]["state"] == "down",
        timeout_s=120,
    )
    down_s = time.monotonic() - started
    sc.wait_for("rescheduled", lambda: settled(cluster, without=victim.name), timeout_s=180)
    moved_s = time.monotonic() - started
    print(
        f"stopped node ({cluster.managers} managers): docker stop {stop_s:.1f} s, "
        f"Down after {down_s:.1f} s, its task running elsewhere after {moved_s:.1f} s",
        flush=True,
    )
    timed("start the node again until Ready", lambda: cluster.start_node(victim))
    cluster.docker(cluster.control_node(), "service", "rm", SERVICE)


def registry_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def registry_way(cluster: sc.SwarmCluster, image: str) -> None:
    """Push IMAGE to a local registry on the machine; each node pulls it and tags it back."""
    binary = shutil.which("docker-registry")
    if not binary:
        print("registry: docker-registry not installed (scripts/bootstrap installs it)")
        return
    gateway = str(sc._network_subnet().network_address + 1)
    port = 18399
    base = Path(tempfile.mkdtemp(prefix="dtswn-registry-"))
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {base / 'data'}}}}}\n"
        f"http: {{addr: 0.0.0.0:{port}}}\n"
    )
    server = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sc.wait_for("registry", lambda: registry_answers(port), timeout_s=30)
        local = f"127.0.0.1:{port}/bench/image:1"
        remote = f"{gateway}:{port}/bench/image:1"
        subprocess.run(["docker", "tag", image, local], check=True)
        started = time.monotonic()
        subprocess.run(["docker", "push", local], check=True, capture_output=True)
        pushed_s = time.monotonic() - started

        def pull(node: sc.SwarmNode) -> None:
            cluster.docker(node, "pull", remote, timeout_s=600)
            cluster.docker(node, "tag", remote, image)

        for node in cluster.nodes:  # the save/load copy is not counted
            cluster.docker(node, "rmi", "-f", image)
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(pull, cluster.nodes))
        total_s = time.monotonic() - started
        print(f"registry: push {pushed_s:.1f} s, push + 3 pulls {total_s:.1f} s", flush=True)
        subprocess.run(["docker", "rmi", local], check=True, capture_output=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", default="dte2e/rbac-api:1.15.4")
    parser.add_argument("--rebuild-image", action="store_true")
    parser.add_argument("--managers", type=int, default=sc.MANAGERS)
    parser.add_argument("--registry", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    size = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", args.image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"image {args.image}: {int(size) / 1e6:.0f} MB", flush=True)
    sc.remove_cluster()
    if args.rebuild_image:
        subprocess.run(["docker", "rmi", "-f", sc.NODE_IMAGE], capture_output=True, check=False)
    timed("node image (build when absent)", sc.ensure_node_image)
    cluster = timed(
        "form the cluster (no containers to 3 Ready)",
        lambda: sc.ensure_cluster(3, managers=args.managers),
    )
    print("  of which engines up:", f"{cluster.timings.get('engines_s', 0):.1f} s", flush=True)
    timed("ensure_cluster again (reuse)", lambda: sc.ensure_cluster(3, managers=args.managers))
    print("node memory idle:", node_memory(), flush=True)
    timed(
        "load debian:bookworm-slim into 3 nodes",
        lambda: cluster.load_images("debian:bookworm-slim"),
    )
    timed(f"load {args.image} into 3 nodes", lambda: cluster.load_images(args.image))
    timed(f"load {args.image} again (skipped)", lambda: cluster.load_images(args.image))
    if args.registry:
        registry_way(cluster, args.image)
    stopped_node(cluster)
    if not args.keep:
        timed("remove the cluster", sc.remove_cluster)


if __name__ == "__main__":
    main()
