"""Verified backups, restores and data rollbacks against the raw PostgreSQL tools (issue 22).

    benchmarks/run backup                     1 GB database, 2 interleaved repetitions
    benchmarks/run backup --size-mb 200       a smaller database (while developing)
    .venv/bin/python benchmarks/backup_bench.py [--size-mb 1000] [--reps 2] [--keep]

Brings up docker-compose.prod.yml as a Compose project `dtbk-bench-XXXX` with rbac-api-test:1.15.1
(build the images first: the integration tests do), migrates it, and fills three tables (with
primary keys, a unique and a plain index, foreign keys) up to about SIZE_MB on disk. Then, in
repetitions interleaved raw, ours, raw, ours so that drift on a shared machine shows (each
repetition measures all of it; its figures print as they come):

- raw dump: `pg_dump -Fc` (its default compression) to a file inside the database container;
- raw restore: `pg_restore` of that file into a new database, one job; raw total = the two one
  after the other (what a verified backup costs with the raw tools);
- `deploytools backup create` (its verification included), the CLI end to end, and its ratio
  to the raw total;
- raw `pg_restore -j2` of the raw file into a new database;
- `deploytools backup restore --yes` (the swap by rename, then the verified safety backup of
  the replaced database: the whole command) and its ratio to raw `pg_restore -j2`;
- a deploy of 1.15.2, then `deploytools rollback --restore-db --yes` (app switched back, the
  pre-deploy backup restored into a scratch database and swapped in by rename), against raw
  `pg_restore -j2` taken again just before it: the time until the restored data serves (the
  command's wall time less its last phase, the verified safety backup of the replaced
  database, which is printed on its own, with the whole command), and the longest run of
  failed /health polls during it.

It prints one table. Not a test: nothing is asserted; figures depend on the machine (2 shared
cores here). Everything it starts (the project, its store volume, the deploy's keep tags) is
removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploytools.target import detect_compose  # noqa: E402

PROJECT = f"dtbk-bench-{secrets.token_hex(2)}"
STORE = f"{PROJECT}-store"
#: The environment's name in deploy.toml; the deploys tag images rbac-api-test:dtbk-release-N.
ENV = "dtbk"
#: The rollback record's timing of its safety backup, taken after the app serves again.
SAFETY_PHASE = "safety backup (after serving)"
V1, V2 = "rbac-api-test:1.15.1", "rbac-api-test:1.15.2"
COMPOSE = ROOT / "docker-compose.prod.yml"
DEPLOYTOOLS = ROOT / ".venv" / "bin" / "deploytools"
PG = ["-h", "/var/run/postgresql", "-U", "rbac"]
RAW_FILE = "/tmp/dtbk-raw.dump"  # noqa: S108 - a path inside the database container

#: Three tables, sized per MB of database: events (most of it, numeric and hex text), documents
#: (compressible text), accounts (referenced by both). :accounts, :events, :docs are psql
#: variables set by the benchmark.
DATA_SQL = """
CREATE TABLE bench_accounts (id int PRIMARY KEY, email text UNIQUE NOT NULL, name text NOT NULL,
    created_at timestamptz NOT NULL);
INSERT INTO bench_accounts SELECT g, 'user' || g || '@example.com', initcap(md5(g::text)),
    now() - g * interval '1 minute' FROM generate_series(1, :accounts) g;
CREATE TABLE bench_events (id bigint PRIMARY KEY, account_id int NOT NULL REFERENCES bench_accounts,
    kind text NOT NULL, created_at timestamptz NOT NULL, amount numeric(12,2), note text);
INSERT INTO bench_events SELECT g, 1 + ((g::bigint * 7919) % :accounts)::int,
    (ARRAY['login','logout','view','click','purchase','refund','signup','error'])[1 + g % 8],
    now() - g * interval '1 second', round((random() * 1000)::numeric, 2),
    md5(random()::text) || ' ' || md5(g::text) FROM generate_series(1, :events) g;
CREATE INDEX ON bench_events (account_id);
CREATE TABLE bench_documents (id int PRIMARY KEY, account_id int NOT NULL REFERENCES bench_accounts,
    title text, body text);
INSERT INTO bench_documents SELECT g, 1 + g % :accounts, 'document ' || g,
    repeat('lorem ipsum dolor sit amet ' || md5(random()::text) || ' ', 12)
    FROM generate_series(1, :docs) g;
ANALYZE;
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compose(env: dict[str, str], *args: str) -> None:
    argv = [*detect_compose().prefix, "-f", str(COMPOSE), "-p", PROJECT, *args]
    subprocess.run(argv, env={**os.environ, **env}, check=True, capture_output=True)


def db_container() -> str:
    found = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
         "--filter", "label=com.docker.compose.service=db"],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    if not found:
        raise SystemExit("the database container is not running")
    return found[0]


def db_exec(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["docker", "exec", "-i", db_container(), *argv],
        check=True,
        capture_output=True,
        text=True,
        input=stdin,
    )
    return done.stdout.strip()


def psql(sql: str, database: str = "rbac") -> str:
    return db_exec("psql", "-X", "-At", *PG, "-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql)


def timed(action: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = action(*args)
    return time.monotonic() - started, result


def fresh_database(name: str) -> None:
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', "postgres")
    psql(f'CREATE DATABASE "{name}"', "postgres")


def raw_dump() -> float:
    pg_dump = f"pg_dump {' '.join(PG)} -d rbac -Fc > {RAW_FILE}"
    return timed(lambda: db_exec("sh", "-c", pg_dump))[0]


def raw_restore(jobs: int) -> float:
    fresh_database("dtbk_raw")
    argv = ["pg_restore", *PG, "-d", "dtbk_raw", "--exit-on-error", "--no-owner"]
    seconds = timed(lambda: db_exec(*argv, *(["-j", str(jobs)] if jobs > 1 else []), RAW_FILE))[0]
    psql('DROP DATABASE "dtbk_raw" WITH (FORCE)', "postgres")
    return seconds


def deploytools(config: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(DEPLOYTOOLS), "--config", str(config), "--json", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"deploytools {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return dict(json.loads(done.stdout)["result"])


class Poller:
    """Polls /health every 50 ms; the longest run of failures is the downtime seen."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.longest = 0.0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        down_since: float | None = None
        while not self.stop.is_set():
            ok = False
            with contextlib.suppress(requests.RequestException):
                ok = requests.get(self.url, timeout=1).status_code == 200
            now = time.monotonic()
            if ok and down_since is not None:
                self.longest = max(self.longest, now - down_since)
                down_since = None
            elif not ok:
                down_since = down_since or now
            time.sleep(0.05)

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def wait_healthy(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become healthy")


def fill(size_mb: int) -> None:
    counts = {"accounts": size_mb * 210, "events": size_mb * 3800, "docs": size_mb * 380}
    variables = [a for k, v in counts.items() for a in ("-v", f"{k}={v}")]
    db_exec(
        "psql", "-X", "-q", *PG, "-d", "rbac", "-v", "ON_ERROR_STOP=1", *variables, "-f", "-",
        stdin=DATA_SQL,
    )  # fmt: skip


def keep_tags() -> set[str]:
    """The keep tags of this benchmark's environment on the engine (see steps/deploy.py)."""
    tags = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "rbac-api-test"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {t for t in tags if f":{ENV}-release-" in t}


def write_config(workdir: Path, env: dict[str, str], port: int) -> Path:
    variables = {k: v for k, v in env.items() if k != "APP_IMAGE"}
    table = ", ".join(f'{k} = "{v}"' for k, v in variables.items())
    path = workdir / "deploy.toml"
    path.write_text(
        '[project]\nname = "rbac-api"\nimage_repository = "rbac-api-test"\n'
        f'compose_files = ["{COMPOSE}"]\napp_service = "app"\ndatabase_service = "db"\n'
        'migration_command = ["alembic", "-c", "/app/alembic.ini", "upgrade", "head"]\n'
        f'[environments.{ENV}]\ncompose_project = "{PROJECT}"\n'
        f'base_url = "http://127.0.0.1:{port}"\nvariables = {{ {table} }}\n'
        f'[backups]\nstore = "volume:{STORE}"\nretention = 3\n'
    )
    return path


class Table:
    """Rows of figures, one column per repetition."""

    def __init__(self) -> None:
        self.rows: dict[str, list[float]] = {}
        self.notes: list[tuple[str, str]] = []

    def add(self, name: str, value: float) -> None:
        self.rows.setdefault(name, []).append(value)
        print(f"  {name}: {value:.2f}", flush=True)

    def print(self) -> None:
        width = max(len(name) for name in [*self.rows, *(n for n, _ in self.notes)])
        reps = max(len(v) for v in self.rows.values())
        head = "".join(f"{'run ' + str(i + 1):>9}" for i in range(reps))
        print(f"\n{'measure':<{width}}{head}{'median':>9}")
        print("-" * (width + 9 * (reps + 1)))
        for name, values in self.rows.items():
            cells = "".join(f"{v:>9.2f}" for v in values) + " " * 9 * (reps - len(values))
            print(f"{name:<{width}}{cells}{statistics.median(values):>9.2f}")
        for name, value in self.notes:
            print(f"{name:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="database size (default 1 GB)")
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions")
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
    table = Table()
    workdir = Path(tempfile.mkdtemp(prefix="dtbk-bench-"))
    print(f"project {PROJECT}, {args.size_mb} MB, {args.reps} repetitions", flush=True)
    tags_before = keep_tags()
    try:
        compose(env, "up", "-d")
        wait_healthy(url)
        migrate = ["alembic", "-c", "/app/alembic.ini", "upgrade", "head"]
        compose(env, "run", "--rm", "--no-deps", "-T", "app", *migrate)
        seconds = timed(lambda: fill(args.size_mb))[0]
        size = int(psql("SELECT pg_database_size('rbac')"))
        rows = psql("SELECT sum(n_live_tup) FROM pg_stat_user_tables")
        table.notes.append(
            ("database", f"{size / 1e6:.0f} MB, {rows} rows ({seconds:.0f} s to fill)")
        )
        config = write_config(workdir, env, port)

        for rep in range(args.reps):
            # One repetition measures everything, raw and ours in turn, so that a run cut short
            # still has every figure and drift on a shared machine shows between repetitions.
            print(f"repetition {rep + 1}", flush=True)
            dump_s = raw_dump()
            restore_s = raw_restore(jobs=1)
            table.add("raw pg_dump -Fc to a file", dump_s)
            table.add("raw pg_restore (1 job), new database", restore_s)
            table.add("raw total (dump, then restore)", dump_s + restore_s)
            ours, created = timed(deploytools, config, "backup", "create", "--env", ENV)
            manifest = created["manifest"]
            assert created["verification"]["ok"], created
            table.add("backup create, verified", ours)
            table.add("  ratio to raw total", ours / (dump_s + restore_s))
            raw_j2 = raw_restore(jobs=2)
            table.add("raw pg_restore -j2, new database", raw_j2)
            restore = ["backup", "restore", "--env", ENV, manifest["id"], "--yes"]
            ours = timed(deploytools, config, *restore)[0]
            table.add("backup restore (safety backup, swap)", ours)
            table.add("  ratio to raw pg_restore -j2", ours / raw_j2)
            if rep == 0:
                dump_mb = int(db_exec("stat", "-c", "%s", RAW_FILE)) / 1e6
                ours_mb = manifest["size"] / 1e6
                table.notes.append(("dump sizes", f"raw {dump_mb:.0f} MB, ours {ours_mb:.0f} MB"))

            deploy = ["deploy", "--env", ENV, "--image", V2]
            table.add(
                "deploy 1.15.2 (backup if none since last release)",
                timed(deploytools, config, *deploy)[0],
            )
            wait_healthy(url)
            raw_j2 = raw_restore(jobs=2)
            table.add("raw pg_restore -j2, before the rollback", raw_j2)
            with Poller(url) as poller:
                rollback = ["rollback", "--env", ENV, "--restore-db", "--yes"]
                ours, rolled = timed(deploytools, config, *rollback)
                wait_healthy(url)
                time.sleep(0.5)
            # The command ends with the safety backup of the replaced database, taken once the
            # app serves the restored data: serving = the command's wall time less that phase.
            safety_s = float(rolled["timings"].get(SAFETY_PHASE, 0.0))
            serving = ours - safety_s
            table.add("rollback --restore-db, until the restored data serves", serving)
            table.add("  its ratio to raw pg_restore -j2", serving / raw_j2)
            table.add("  then the safety backup (verified), old database dropped", safety_s)
            table.add("rollback --restore-db, whole command", ours)
            table.add("  longest /health outage", poller.longest)
    finally:
        if not args.keep:
            compose(env, "down", "-v", "--remove-orphans")
            # The store's kept helper mounts it: the engine refuses to remove it before.
            helpers = ["docker", "ps", "-aq", "--filter", f"volume={STORE}"]
            found = subprocess.run(helpers, capture_output=True, text=True).stdout.split()
            if found:
                subprocess.run(["docker", "rm", "-f", "-v", *found], capture_output=True)
            subprocess.run(["docker", "volume", "rm", "-f", STORE], capture_output=True)
            # The keep tags the deploys put on the images (the images themselves stay).
            ours_tags = sorted(keep_tags() - tags_before)
            if ours_tags:
                subprocess.run(["docker", "rmi", *ours_tags], capture_output=True)
    table.print()


if __name__ == "__main__":
    main()
