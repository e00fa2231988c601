#!/usr/bin/env python3
"""No request lost on Swarm: failed requests and p99 during a rolling update and a rollback of
3 replicas of rbac-api on a 3-node Swarm (tests/helpers/swarm_cluster.py) under an open load of
RATE requests/s (tests/helpers/load.py), Swarm's own way beside deploytools'.

(a) `swarm`: Swarm alone. The kernel here has no IPVS, so the ingress routing mesh does not
    run: the app publishes its port in host mode on every node and the client round-robins
    over the three nodes (as a load balancer without health checks would). The update is
    `docker service update --image V2 --update-order ORDER --update-parallelism 1`
    (--detach=false), the rollback `docker service rollback`. ORDER is start-first, what users
    run and report dropped requests with (SWARM_BENCH_ORDERS, default "start-first stop-first":
    with host-mode ports start-first cannot place a new task beside the old one on any node,
    so it is measured as it goes, with a deadline, and stop-first beside it).
(b) `deploytools`: the app publishes no port; deploytools' proxy (deploytools/proxy_swarm.py)
    runs on the manager on the stack's overlay, following `tasks.<service>` with health checks
    and retries; the load goes to it. The update is deploytools/engine/swarm_update.py
    (start-first, parallelism 1, monitor 5 s, pause on failure), watched to the end; the
    rollback is Swarm's rollback of that update (`ServiceUpdate.roll_back`), watched too.

Each step is timed from its start to its end plus SETTLE_S; the steady load before it is
measured over STEADY_S. The database (PostgreSQL) runs on the first node, the app's migrations
once in a one-off container on the overlay.

    flock /tmp/dt-docker.lock .venv/bin/python benchmarks/swarm_bench.py
    SWARM_BENCH_ONLY=deploytools ... (or swarm)
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the suite's helpers: tests/helpers

import yaml  # noqa: E402

from deploytools import proxy_swarm  # noqa: E402
from deploytools.engine.connection import connect  # noqa: E402
from deploytools.engine.swarm_update import (  # noqa: E402
    SdkServiceApi,
    ServiceUpdate,
    UpdatePolicy,
)
from deploytools.proxy_settings import HealthAnswer  # noqa: E402
from tests.helpers.load import LoadProcess, Sample, failures, quantile  # noqa: E402
from tests.helpers.swarm_cluster import SwarmCluster, ensure_cluster  # noqa: E402

RATE = float(os.environ.get("SWARM_BENCH_RATE", "100"))
ONLY = os.environ.get("SWARM_BENCH_ONLY", "")
ORDERS = os.environ.get("SWARM_BENCH_ORDERS", "start-first stop-first").split()
V1 = os.environ.get("SWARM_BENCH_V1", "ghcr.io/example/rbac-api:1.15.1")
V2 = os.environ.get("SWARM_BENCH_V2", "ghcr.io/example/rbac-api:1.15.2")
POSTGRES = "deploytools-test/postgres:15"
HAPROXY = os.environ.get("PROXY_IMAGE", "deploytools-test/haproxy:bookworm")
STACK = "dtswd-bench"
#: Host-mode port of the app on every node (swarm), and the proxy's port on the manager.
APP_PORT = 18201
PROXY_PORT = 18202
REPLICAS = 3
STEADY_S = 10.0
SETTLE_S = 5.0
#: How long one step may take before it counts as stuck (a start-first update that cannot
#: place its new task).
STEP_TIMEOUT_S = float(os.environ.get("SWARM_BENCH_STEP_TIMEOUT_S", "120"))


def stack_file(*, host_ports: bool) -> dict[str, Any]:
    """The stack: PostgreSQL on the first node, 3 replicas of the app spread over the nodes."""
    env = {
        "POSTGRES_USER": "rbac",
        "POSTGRES_PASSWORD": "bench-password",
        "POSTGRES_DB": "rbac",
    }
    app: dict[str, Any] = {
        "image": V1,
        "environment": {
            **env,
            "DATABASE_HOST": "db",
            "DATABASE_PORT": "5432",
            "APP_SECRET_KEY": "bench-secret-key-0123456789",
            "LOG_LEVEL": "warning",
        },
        "healthcheck": {
            "test": [
                "CMD",
                "bash",
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' "
                ">&3 && read -r status <&3 && [[ $$status == *' 200 '* ]]",
            ],
            "interval": "2s",
            "timeout": "3s",
            "retries": 3,
            "start_period": "10s",
        },
        "stop_grace_period": "10s",
        "deploy": {
            "endpoint_mode": "dnsrr",
            "replicas": REPLICAS,
            "update_config": {"parallelism": 1, "order": "start-first", "monitor": "5s"},
            "restart_policy": {"condition": "any"},
        },
        "networks": ["default"],
    }
    if host_ports:
        app["ports"] = [{"target": 8080, "published": APP_PORT, "mode": "host"}]
    return {
        "version": "3.8",
        "services": {
            "db": {
                "image": POSTGRES,
                "environment": env,
                "deploy": {
                    "endpoint_mode": "dnsrr",
                    "placement": {"constraints": ["node.hostname == dtsw-node-1"]},
                },
                "networks": ["default"],
            },
            "app": app,
        },
        "networks": {"default": {"driver": "overlay", "attachable": True}},
    }


@dataclass
class Step:
    name: str
    began: float
    ended: float
    outcome: str


def report(label: str, samples: list[Sample], steps: list[Step]) -> list[str]:
    lines = []
    for step in steps:
        steady = [
            s.latency_s
            for s in samples
            if step.began - STEADY_S <= s.scheduled < step.began and s.ok
        ]
        during = [s for s in samples if step.began <= s.scheduled < step.ended + SETTLE_S]
        failed = failures(during)
        errors: dict[str, int] = {}
        for sample in failed:
            key = sample.error.split(":")[0]
            errors[key] = errors.get(key, 0) + 1
        lines.append(
            f"{label:<28} {step.name:<9} {step.ended - step.began:6.1f} s  "
            f"requests {len(during):5d}  failed {len(failed):4d}  "
            f"p99 steady {quantile(steady, 0.99) * 1000:7.1f} ms  "
            f"p99 during {quantile([s.latency_s for s in during], 0.99) * 1000:8.1f} ms  "
            f"{step.outcome}" + (f"  errors {errors}" if errors else "")
        )
    return lines


class Bench:
    def __init__(self, cluster: SwarmCluster, tmp: Path) -> None:
        self.cluster, self.tmp = cluster, tmp
        self.manager = cluster.manager

    def docker(self, *args: str, timeout_s: float = 180) -> str:
        return self.cluster.docker(self.manager, *args, timeout_s=timeout_s)

    def deploy(self, *, host_ports: bool) -> None:
        path = self.tmp / "stack.yml"
        path.write_text(yaml.safe_dump(stack_file(host_ports=host_ports)), encoding="utf-8")
        self.docker("stack", "deploy", "--resolve-image", "never", "-c", str(path), STACK)
        self.wait_db()
        # The migrations once, in a one-off container on the overlay (the app's /health
        # reads the revision).
        self.docker(
            "run", "--rm", "--network", f"{STACK}_default",
            "-e", "DATABASE_HOST=db", "-e", "POSTGRES_USER=rbac",
            "-e", "POSTGRES_PASSWORD=bench-password", "-e", "POSTGRES_DB=rbac",
            "-e", "APP_SECRET_KEY=bench-secret-key-0123456789",
            V1, "alembic", "-c", "/app/alembic.ini", "upgrade", "head",
            timeout_s=180,
        )  # fmt: skip
        self.wait_replicas(V1)

    def wait_db(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            out = self.docker(
                "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_db"
            ).split()
            if out:
                ready = subprocess.run(
                    ["docker", "-H", self.manager.docker_host, "exec", out[0],
                     "pg_isready", "-h", "127.0.0.1", "-U", "rbac"],
                    capture_output=True, check=False,
                )  # fmt: skip
                if ready.returncode == 0:
                    return
            time.sleep(1)
        raise RuntimeError("the database did not become ready")

    def wait_replicas(self, image: str, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = self.docker(
                "service", "ps", f"{STACK}_app", "--filter", "desired-state=running",
                "--format", "{{.Image}} {{.CurrentState}} {{.Node}}",
            )  # fmt: skip
            rows = [r.split() for r in out.splitlines() if r.strip()]
            running = [r for r in rows if r[0] == image and r[1] == "Running"]
            if len(running) == REPLICAS and len(rows) == REPLICAS:
                return
            time.sleep(1)
        raise RuntimeError(f"{REPLICAS} tasks of {image} did not run: {out}")

    def remove(self) -> None:
        subprocess.run(
            ["docker", "-H", self.manager.docker_host, "stack", "rm", STACK],
            capture_output=True,
            check=False,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = self.docker("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}")
            nets = self.docker("network", "ls", "-q", "--filter", f"name={STACK}_default")
            if not left.split() and not nets.split():
                break
            time.sleep(1)

    def timed(self, name: str, action: Any) -> Step:
        began = time.monotonic()
        try:
            outcome = action() or "done"
        except Exception as error:  # a stuck or refused update is a result, not a crash
            outcome = f"FAILED: {str(error).strip().splitlines()[-1][:160]}"
        ended = time.monotonic()
        time.sleep(SETTLE_S)
        return Step(name, began, ended, outcome)

    # -- (a) Swarm alone ---------------------------------------------------------------------

    def swarm_own(self, order: str) -> list[str]:
        self.remove()
        self.deploy(host_ports=True)
        hosts = tuple(node.address for node in self.cluster.nodes)
        service = f"{STACK}_app"

        def update() -> str:
            self.docker(
                "service", "update", "--detach=false", "--quiet", "--image", V2,
                "--no-resolve-image", "--update-order", order, "--update-parallelism", "1",
                "--update-monitor", "5s", "--update-failure-action", "pause",
                "--rollback-order", order, "--rollback-parallelism", "1", service,
                timeout_s=STEP_TIMEOUT_S,
            )  # fmt: skip
            return "completed"

        def rollback() -> str:
            self.docker(
                "service", "rollback", "--detach=false", "--quiet", service,
                timeout_s=STEP_TIMEOUT_S,
            )  # fmt: skip
            return "completed"

        with LoadProcess(APP_PORT, rate_per_s=RATE, hosts=hosts, timeout_s=5.0) as load:
            time.sleep(STEADY_S)
            steps = [self.timed("update", update)]
            if steps[0].outcome.startswith("FAILED"):
                self.wait_settled(service)
            steps.append(self.timed("rollback", rollback))
            samples = load.stop()
        self.remove()
        return report(f"swarm {order} (round robin)", samples, steps)

    def wait_settled(self, service: str) -> None:
        """After a stuck update: what it left, for the record."""
        out = self.docker(
            "service",
            "ps",
            service,
            "--format",
            "{{.Image}} {{.DesiredState}} {{.CurrentState}} {{.Error}}",
        )
        print("  left by the stuck update:\n    " + "\n    ".join(out.splitlines()[:8]))

    # -- (b) deploytools ---------------------------------------------------------------------

    def deploytools_way(self) -> list[str]:
        self.remove()
        self.deploy(host_ports=False)
        manager = connect(self.manager.docker_host, timeout=20)
        service = f"{STACK}_app"
        spec = proxy_swarm.SwarmProxySpec(
            stack=STACK,
            service=service,
            network=f"{STACK}_default",
            image=HAPROXY,
            app_port=8080,
            health=HealthAnswer("/health", 200),
            publish=("", PROXY_PORT),
        )
        proxy_swarm.ensure_running(manager, spec, timeout_s=60)
        update = ServiceUpdate(SdkServiceApi(manager), service, network=f"{STACK}_default")
        policy = UpdatePolicy(parallelism=1, monitor_s=5.0)

        def roll() -> str:
            update.start(V2, policy)
            update.watch(replicas=REPLICAS, timeout_s=STEP_TIMEOUT_S)
            return "completed"

        def back() -> str:
            update.roll_back()
            update.wait_rolled_back(replicas=REPLICAS, timeout_s=STEP_TIMEOUT_S)
            return "completed"

        try:
            time.sleep(3)  # the proxy's first health checks
            with LoadProcess(
                PROXY_PORT, rate_per_s=RATE, hosts=(self.manager.address,), timeout_s=5.0
            ) as load:
                time.sleep(STEADY_S)
                steps = [self.timed("update", roll), self.timed("rollback", back)]
                samples = load.stop()
        finally:
            proxy_swarm.remove(manager, spec.name)
            manager.close()
            self.remove()
        return report("deploytools (proxy, watched)", samples, steps)


def main() -> None:
    cluster = ensure_cluster(3)
    cluster.load_images(V1, V2, POSTGRES, HAPROXY)
    lines = [
        f"{platform.node()} {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{RATE:.0f} requests/s, {REPLICAS} replicas on {len(cluster.nodes)} nodes"
    ]
    with tempfile.TemporaryDirectory(prefix="dtswd-bench-") as tmp:
        bench = Bench(cluster, Path(tmp))
        try:
            if ONLY in ("", "swarm"):
                for order in ORDERS:
                    lines += bench.swarm_own(order)
                    print("\n".join(lines[-2:]), flush=True)
            if ONLY in ("", "deploytools"):
                lines += bench.deploytools_way()
                print("\n".join(lines[-2:]), flush=True)
        finally:
            bench.remove()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
