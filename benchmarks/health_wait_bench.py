#!/usr/bin/env python3
"""How long a health wait takes: deploytools' wait (the container's own healthcheck, run while
the engine says "starting") against the engine's status turning "healthy".

Each cycle starts a PostgreSQL container (the suite's image, POSTGRES_IMAGE) with the
healthcheck of docker-compose.prod.yml's database (`pg_isready -h 127.0.0.1`), at a probe
interval of INTERVALS (default "2,30": the reference stack's, and Docker's default), then times
from the start to `wait_until_healthy`'s return, and on to the engine's own status "healthy".
HEALTH_BENCH_CYCLES cycles per interval (default 3). Run it under the suite's Docker lock:

    flock /tmp/dt-docker.lock .venv/bin/python benchmarks/health_wait_bench.py
"""

from __future__ import annotations

import os
import platform
import sys
import time
import uuid
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploytools.engine import Container
from deploytools.target import wait_until_healthy

IMAGE = os.environ.get("POSTGRES_IMAGE", "deploytools-test/postgres:15")
SECOND = 1_000_000_000


def cycle(client: docker.DockerClient, interval_s: int) -> tuple[float, float]:
    name = f"dtspeed-bench-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    sdk = client.containers.run(
        IMAGE,
        name=name,
        detach=True,
        environment={"POSTGRES_USER": "bench", "POSTGRES_PASSWORD": "bench", "POSTGRES_DB": "b"},
        healthcheck={
            "test": ["CMD-SHELL", 'pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d b'],
            "interval": interval_s * SECOND,
            "timeout": 3 * SECOND,
            "retries": 30,
        },
    )
    try:
        wait_until_healthy(Container(sdk), timeout_s=interval_s * 3 + 60)
        ours = time.monotonic() - started
        while True:
            sdk.reload()
            if sdk.attrs["State"]["Health"]["Status"] == "healthy":
                break
            time.sleep(0.05)
        return ours, time.monotonic() - started
    finally:
        sdk.remove(force=True, v=True)


def main() -> None:
    intervals = [int(i) for i in os.environ.get("INTERVALS", "2,30").split(",")]
    cycles = int(os.environ.get("HEALTH_BENCH_CYCLES", "3"))
    client = docker.from_env()
    print(f"{platform.node()}: {os.cpu_count()} cores, engine {client.version()['Version']}")
    print(f"image {IMAGE}; seconds from the container's start")
    for interval in intervals:
        for n in range(cycles):
            ours, engine = cycle(client, interval)
            print(
                f"interval {interval:>2} s, cycle {n + 1}: deploytools' wait {ours:5.2f} s, "
                f"the engine's status healthy {engine:5.2f} s"
            )
    client.close()


if __name__ == "__main__":
    main()
