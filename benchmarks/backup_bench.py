"""Benchmarks of issue 5: backup + verify against raw pg_dump, recreate deploy, rollback.

    .venv/bin/python benchmarks/backup_bench.py [--size-mb 200] [--keep]

Brings up docker-compose.prod.yml as project `dtdep-bench` with rbac-api-test:1.15.1 (build the
images first: the integration tests do, or `docker build` from the release repo), fills a table
with about SIZE_MB of hard-to-compress rows, then measures:

- raw `pg_dump -Fc > /dev/null` inside the database container (the floor);
- `backup create` (dump streamed into the store, snapshot-consistent row counts) and
  `backup verify` (sha256, pg_restore --list, test restore into a scratch database);
- a recreate deploy of 1.15.2 (its phases from the release record) and the downtime a client
  polling /health every 50 ms sees;
- a rollback to 1.15.1 without a restore, and its downtime.

It prints a table. Not a test: nothing is asserted; numbers depend on the machine (2 shared
cores here). The issue asks for about 1 GB; the default is 200 MB to keep the shared machine
usable. Pass --size-mb 1000 for the full size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploytools.config import load_config  # noqa: E402
from deploytools.context import StepContext  # noqa: E402
from deploytools.steps import backup as backup_step  # noqa: E402
from deploytools.steps import deploy as deploy_step  # noqa: E402
from deploytools.steps import rollback as rollback_step  # noqa: E402
from deploytools.target import detect_compose  # noqa: E402

PROJECT = "dtdep-bench"
STORE = "dtdep-bench-store"
V1, V2 = "rbac-api-test:1.15.1", "rbac-api-test:1.15.2"
COMPOSE = ROOT / "docker-compose.prod.yml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compose(env: dict[str, str], *args: str) -> None:
    argv = [*detect_compose().prefix, "-f", str(COMPOSE), "-p", PROJECT, *args]
    subprocess.run(argv, env={**os.environ, **env}, check=True, capture_output=True)


def db_exec(*argv: str) -> str:
    container = f"{PROJECT}_db_1"
    done = subprocess.run(
        ["docker", "exec", container, *argv], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def psql(sql: str) -> str:
    return db_exec(
        "psql", "-X", "-At", "-U", "rbac", "-d", "rbac", "-v", "ON_ERROR_STOP=1", "-c", sql
    )


class Poller:
    """Polls /health every 50 ms; the longest run of failures is the downtime seen."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.longest = 0.0
        self.failures = 0
        self.requests = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        down_since: float | None = None
        while not self.stop.is_set():
            ok = False
            with contextlib.suppress(requests.RequestException):
                ok = requests.get(self.url, timeout=1).status_code == 200
            now = time.monotonic()
            self.requests += 1
            if ok and down_since is not None:
                self.longest = max(self.longest, now - down_since)
                down_since = None
            elif not ok:
                self.failures += 1
                down_since = down_since or now
            time.sleep(0.05)

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="leave the stack up afterwards")
    args = parser.parse_args()
    for image in (V1, V2):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            raise SystemExit(f"image {image} is missing: run the integration tests first")
    port = free_port()
    env = {
        "POSTGRES_IMAGE": os.environ.get("POSTGRES_IMAGE", "deploytools-test/postgres:15"),
        "APP_IMAGE": V1,
        "APP_PORT": str(port),
        "POSTGRES_USER": "rbac",
        "POSTGRES_DB": "rbac",
        "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
        "APP_SECRET_KEY": secrets.token_urlsafe(32),
    }
    url = f"http://127.0.0.1:{port}/health"
    rows: list[tuple[str, str]] = []
    workdir = Path(tempfile.mkdtemp(prefix="dtdep-bench-"))
    try:
        compose(env, "down", "-v", "--remove-orphans")
        subprocess.run(["docker", "volume", "rm", "-f", STORE], capture_output=True)
        compose(env, "up", "-d")
        wait_healthy(url)
        compose(
            {**env},
            "run",
            "--rm",
            "--no-deps",
            "-T",
            "app",
            "alembic",
            "-c",
            "/app/alembic.ini",
            "upgrade",
            "head",
        )
        # About 250 bytes per row of random hex: compresses roughly 2:1, like real data.
        n = args.size_mb * 1_000_000 // 250
        # n is an int computed here: nothing outside reaches this SQL.
        payload = " || ".join(["md5(random()::text)"] * 6)
        select = f"SELECT g AS id, {payload} AS payload FROM generate_series(1, {n}) g"  # noqa: S608
        psql("CREATE TABLE bench_data AS " + select)
        size = int(psql("SELECT pg_database_size('rbac')"))
        rows.append(("database size", f"{size / 1e6:.0f} MB ({n} generated rows)"))

        variables = {k: v for k, v in env.items() if k != "APP_IMAGE"}
        table = ", ".join(f'{k} = "{v}"' for k, v in variables.items())
        (workdir / "deploy.toml").write_text(
            '[project]\nname = "rbac-api"\nimage_repository = "rbac-api-test"\n'
            f'compose_files = ["{COMPOSE}"]\napp_service = "app"\ndatabase_service = "db"\n'
            'migration_command = ["alembic", "-c", "/app/alembic.ini", "upgrade", "head"]\n'
            f'[environments.bench]\ncompose_project = "{PROJECT}"\n'
            f'base_url = "http://127.0.0.1:{port}"\nvariables = {{ {table} }}\n'
            f'[backups]\nstore = "volume:{STORE}"\n'
        )
        ctx = StepContext(config=load_config(workdir / "deploy.toml"))

        started = time.monotonic()
        db_exec("sh", "-c", "pg_dump -h /var/run/postgresql -U rbac -d rbac -Fc > /dev/null")
        raw = time.monotonic() - started
        rows.append(("raw pg_dump -Fc > /dev/null", f"{raw:.1f} s"))

        with backup_step.open_environment(ctx, "bench") as session:
            started = time.monotonic()
            manifest = backup_step.create_in(session)
            created = time.monotonic() - started
            started = time.monotonic()
            backup_step.verify_in(session, manifest.id)
            verified = time.monotonic() - started
        rows.append(("backup create", f"{created:.1f} s ({manifest.size / 1e6:.0f} MB dump)"))
        rows.append(("backup verify", f"{verified:.1f} s"))
        rows.append(("(create + verify) / raw", f"{(created + verified) / raw:.2f}"))
        rows.append(("create / raw", f"{created / raw:.2f}"))

        with Poller(url) as poller:
            started = time.monotonic()
            result = deploy_step.run(ctx, environment="bench", image=V2)
            deployed = time.monotonic() - started
            wait_healthy(url)
            time.sleep(0.5)
        assert result.record is not None
        phases = ", ".join(f"{k} {v:.1f}" for k, v in result.record.timings.items())
        rows.append(("recreate deploy 1.15.1 -> 1.15.2", f"{deployed:.1f} s ({phases})"))
        rows.append(("  downtime seen by a poller", f"{poller.longest:.1f} s"))

        with Poller(url) as poller:
            started = time.monotonic()
            back = rollback_step.run(ctx, environment="bench")
            rolled = time.monotonic() - started
            wait_healthy(url)
            time.sleep(0.5)
        phases = ", ".join(f"{k} {v:.1f}" for k, v in back.timings.items())
        rows.append(("rollback to 1.15.1 (no restore)", f"{rolled:.1f} s ({phases})"))
        rows.append(("  downtime seen by a poller", f"{poller.longest:.1f} s"))
    finally:
        if not args.keep:
            compose(env, "down", "-v", "--remove-orphans")
            subprocess.run(["docker", "volume", "rm", "-f", STORE], capture_output=True)
            # The keep tag the deploy put on 1.15.2 (the image itself stays).
            subprocess.run(
                ["docker", "rmi", "rbac-api-test:bench-release-0001"], capture_output=True
            )
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
