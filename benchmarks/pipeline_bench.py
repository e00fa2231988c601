"""How long the whole pipeline takes on this machine, and what a client sees meanwhile.

    .venv/bin/python benchmarks/pipeline_bench.py        (or benchmarks/run)

Brings up staging and production (Compose projects dte2e-bench-staging/-production) at rbac-api
1.15.1 with data, then runs `deploytools pipeline run --tag v1.15.2 --yes` (the approval is
given, monitor is off) and prints:

- the wall time from the tag to a verified production (approval and monitor excluded: the first
  takes no time with --yes, the second does not run);
- each step's time, from the pipeline record;
- what a client polling /health through the proxy every 20 ms sees: its failed polls over the
  whole pipeline run, and during the deploy to production (with the strategy `--strategy auto`
  chose, and why) the longest run of failed polls, from the first failure to the next success;
- a rollback (`deploytools rollback --env production --yes`) back to 1.15.1: its time and the
  downtime the same client sees.

Everything it creates is removed at the end, failures included. Traffic goes to 127.0.0.1 only;
the poller stops by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker
import requests

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "dte2e-bench-"
POLL_S = 0.02


# The end-to-end tier's stack helpers and deploy.toml, so the benchmark runs what it tests.
sys.path.insert(0, str(ROOT))
from tests.helpers import pipeline_env as e2e  # noqa: E402
from tests.helpers import stacks as integration  # noqa: E402


class Poller:
    """GET /health every POLL_S seconds in a thread; remembers (time, ok) of each answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        deadline = time.monotonic() + 1800  # stops by itself, whatever happens to the caller
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                ok = session.get(f"{self.url}/health", timeout=1).status_code == 200
            except requests.RequestException:
                ok = False
            self.samples.append((time.monotonic(), ok))
            time.sleep(POLL_S)
        session.close()

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def longest_outage(self, start: float = 0.0, end: float = float("inf")) -> tuple[float, int]:
        """The longest span from a failed poll to the next good one, and the failed polls."""
        longest, failed, down_since = 0.0, 0, None
        for at, ok in self.samples:
            if not start <= at <= end:
                continue
            if not ok:
                failed += 1
                down_since = at if down_since is None else down_since
            elif down_since is not None:
                longest = max(longest, at - down_since)
                down_since = None
        return longest, failed


def run_cli(env: dict[str, str], config: Path, *args: str) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "deploytools", "--config", str(config), "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    seconds = time.monotonic() - started
    try:
        return done.returncode, json.loads(done.stdout), seconds
    except ValueError:
        raise SystemExit(f"deploytools {' '.join(args)} printed no JSON:\n{done.stderr}") from None


def main() -> int:
    client = docker.from_env(version="auto", timeout=600)
    # The proxy's image as the tests use it (the local stand-in where no registry answers).
    os.environ.setdefault("PROXY_IMAGE", integration.PROXY_IMAGE)
    tmp = Path(tempfile.mkdtemp(prefix="dte2e-bench-"))
    repo = tmp / "rbac-api"
    subprocess.run([str(e2e.MAKE_RELEASE_REPO), str(repo)], check=True, capture_output=True)
    postgres = integration.POSTGRES_IMAGE
    shared = {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
        "APP_SECRET_KEY": secrets.token_urlsafe(32),
        "ADMIN_USERNAME": "admin",
        "ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "CHECK_VIEWER_USERNAME": "bench-viewer",
        "CHECK_VIEWER_PASSWORD": secrets.token_urlsafe(18),
    }
    stacks = {}
    for name in ("staging", "production"):
        stack_env = {
            "POSTGRES_IMAGE": postgres,
            "APP_PORT": str(e2e.free_port()),
            "POSTGRES_USER": "rbac",
            "POSTGRES_DB": "rbac",
            "POSTGRES_PASSWORD": shared["POSTGRES_PASSWORD"],
            "APP_SECRET_KEY": shared["APP_SECRET_KEY"],
        }
        stacks[name] = integration.ComposeStack(
            project=f"{PREFIX}{name}", env=stack_env, client=client
        )
    config = tmp / "deploy.toml"
    e2e.write_config(config, stacks["staging"], stacks["production"])
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace(f"volume:{e2e.STORE_VOLUME}", "volume:dte2e-bench-backups"), encoding="utf-8"
    )
    env = {**os.environ, **shared, "POSTGRES_IMAGE": postgres}
    env.pop("GITHUB_ACTIONS", None)
    try:
        build = ("image", "build", "--tag", "v1.15.1", "--repo", str(repo))
        code, built, _ = run_cli(env, config, *build)
        assert code == 0, built
        first = built["result"]["image_id"]
        for stack in stacks.values():
            stack.env["APP_IMAGE"] = first
            stack.down()
            stack.up()
            stack.migrate()
            stack.run_one_off(
                "python3",
                "-m",
                "rbac_api.create_admin",
                container_env={k: shared[k] for k in ("ADMIN_USERNAME", "ADMIN_PASSWORD")},
            )
        e2e.seed_production(stacks["production"].url, shared)

        with Poller(stacks["production"].url) as poller:
            pipeline_start = time.monotonic()
            code, result, wall = run_cli(
                env, config, "pipeline", "run", "--tag", "v1.15.2", "--repo", str(repo), "--yes"
            )
            pipeline_end = time.monotonic()
            assert code == 0, result
            record = result["result"]["record"]
            deployed = _production_deploy(env, config, record)
            time.sleep(0.5)
            code, rolled, rollback_wall = run_cli(
                env, config, "rollback", "--env", "production", "--yes"
            )
            assert code == 0, rolled
            rollback_end = time.monotonic()
            time.sleep(0.5)
        steps = {s["name"]: s for s in record["steps"]}
        deploy_started = _at(steps["deploy-production"]["started"])
        # Poll samples are on the monotonic clock; the record's times are UTC wall times.
        offset = time.time() - time.monotonic()
        deploy_start_m = deploy_started - offset
        deploy_end_m = deploy_start_m + float(steps["deploy-production"]["seconds"])
        deploy_outage, deploy_failed = poller.longest_outage(deploy_start_m - 1, deploy_end_m + 1)
        pipeline_outage, pipeline_failed = poller.longest_outage(pipeline_start, pipeline_end)
        pipeline_polls = sum(1 for at, _ in poller.samples if pipeline_start <= at <= pipeline_end)
        rollback_outage, rollback_failed = poller.longest_outage(
            rollback_end - rollback_wall, rollback_end
        )
        gated = sum(
            float(s["seconds"] or 0)
            for n, s in steps.items()
            if n not in ("approve-production", "monitor-production")
        )
        report(
            record,
            steps,
            wall,
            gated,
            deployed,
            (pipeline_polls, pipeline_failed, pipeline_outage),
            deploy_outage,
            deploy_failed,
            rolled,
            rollback_wall,
            rollback_outage,
            rollback_failed,
            client,
        )
    finally:
        for container in client.containers.list(all=True, filters={"name": PREFIX}):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        for stack in stacks.values():
            stack.down()
        volume = ["docker", "volume", "rm", "-f", "dte2e-bench-backups"]
        subprocess.run(volume, capture_output=True, check=False)
    return 0


def _production_deploy(env: dict[str, str], config: Path, record: dict[str, Any]) -> str:
    """ "rolling, expand-only, ..." : the strategy of the pipeline's production deploy and why,
    from its release record."""
    release = record["releases"].get("production")
    code, history, _ = run_cli(env, config, "history", "--env", "production")
    assert code == 0, history
    found = [r for r in history["result"]["releases"] if r["id"] == release]
    if not found:
        return "unknown (no release record)"
    deploy = found[0]
    return f"{deploy['strategy']}, {deploy.get('strategy_reason') or 'why not recorded'}"


def _at(text: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def report(
    record: dict[str, Any],
    steps: dict[str, dict[str, Any]],
    wall: float,
    gated: float,
    deployed: str,
    pipeline_polls: tuple[int, int, float],
    deploy_outage: float,
    deploy_failed: int,
    rolled: dict[str, Any],
    rollback_wall: float,
    rollback_outage: float,
    rollback_failed: int,
    client: Any,
) -> None:
    engine = client.version()
    print(
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Docker engine {engine.get('Version')} (API {engine.get('ApiVersion')})"
    )
    print(
        f"pipeline {record['tag']}: {wall:.1f} s wall (tag to verified production; the "
        f"approval was --yes, monitor off); steps {gated:.1f} s"
    )
    print("| step | seconds |")
    print("|---|---|")
    for name, step in steps.items():
        seconds = step["seconds"]
        shown = "-" if seconds is None else f"{float(seconds):.1f}"
        print(f"| {name} | {shown} ({step['status']}) |")
    timings = rolled["result"].get("timings", {})
    polls, failed, outage = pipeline_polls
    print(
        f"the whole pipeline run, polled through the proxy every {POLL_S * 1000:.0f} ms: "
        f"{failed} failed polls of {polls}; longest outage {outage:.2f} s"
    )
    print(
        f"deploy to production ({deployed}): longest outage seen by the client: "
        f"{deploy_outage:.2f} s ({deploy_failed} failed polls)"
    )
    print(
        f"rollback to 1.15.1: {rollback_wall:.1f} s wall (phases: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f"); longest outage {rollback_outage:.2f} s ({rollback_failed} failed polls)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
