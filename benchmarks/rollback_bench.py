#!/usr/bin/env python3
"""A rollback in the watch window against today's cold rollback, under load through the proxy.

Each cycle: a rolling deploy of 1.15.2 (labelled expand-only) in-process, STEADY_S of load, then
`deploytools rollback --env prod --yes` run as a command (a process of its own, as a person or a
workflow runs it). Two paths, ROLLBACK_BENCH_CYCLES cycles each (default 3):

- watch window: the deploy kept the previous release's container up ([deploy] watch_window_s
  3600): the rollback switches the proxy back to it;
- cold: the deploy did not keep it (watch_window_s = 0): the rollback starts 1.15.1 beside,
  waits for it to be healthy, smoke-checks and warms it, then switches (the rolling path).

"to switched" is from the command's start (before its process is spawned) to its progress line
that says the proxy switched: "the proxy switched back to ..." in the window, printed right after
the cut (the newer release's server drained); on the cold path the "drain" phase's line, printed
after the cut and the lock's refresh (one more store write, about 0.1 s). "command" is its
whole run. The load is RATE requests/s of GET /health
on 127.0.0.1 through HAProxy, in a process of its own (tests/helpers/load.py); "failed" counts
the requests planned from the command's start to one second after its end.

    .venv/bin/python benchmarks/rollback_bench.py      (or: benchmarks/run rollback)

ROLLBACK_BENCH_LINES=1 prints each rollback's progress lines with their time from its start;
ROLLBACK_BENCH_TRACE=1 runs the command under benchmarks/engine_trace.py and prints its engine
requests too (the tracer's own cost is in those runs' figures). ROLLBACK_BENCH_PATHS=watch (or
cold) runs one path only.
"""

from __future__ import annotations

import compileall
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the suite's helpers: tests/helpers

import docker  # noqa: E402
from rbac_releases import V1, release_images, remove_bench_tags  # noqa: E402

from deploytools.context import StepContext  # noqa: E402
from deploytools.steps import deploy as deploy_step  # noqa: E402
from tests.helpers.load import LoadProcess, Sample, failures, quantile  # noqa: E402
from tests.helpers.shared_stack import _remove_volume, stack_env, write_config  # noqa: E402
from tests.helpers.stacks import ComposeStack  # noqa: E402

RATE = float(os.environ.get("ROLLBACK_BENCH_RATE", "100"))
CYCLES = int(os.environ.get("ROLLBACK_BENCH_CYCLES", "3"))
STEADY_S = 5.0
PREFIX = os.environ.get("ROLLBACK_BENCH_PREFIX", "dtwatch-bench-")
TRACE = os.environ.get("ROLLBACK_BENCH_TRACE") == "1"
PATHS = os.environ.get("ROLLBACK_BENCH_PATHS", "watch,cold").split(",")


def timed_command(argv: list[str]) -> tuple[float, float | None, int, list[str]]:
    """Run `argv`; (its wall seconds, seconds to its "switched" progress line or None, its
    exit code, its stderr lines, each with its time from the start)."""
    lines: list[str] = []
    switched: list[float] = []
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            text = line.rstrip()
            if not switched and (text.endswith(": drain") or "switched back to" in text):
                switched.append(time.monotonic())
            lines.append(f"{time.monotonic() - started:6.3f} s  {text}")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    code = process.wait(timeout=600)
    reader.join(10)
    wall = time.monotonic() - started
    return wall, (switched[0] - started if switched else None), code, lines


def cycle(
    config_path: Path, ctx: StepContext, image: str
) -> tuple[float, float | None, float, float]:
    """One deploy + rollback; (the rollback's wall time, time to switched, its start, end)."""
    deploy_step.run(ctx, environment="prod", image=image, strategy="rolling")
    time.sleep(STEADY_S)
    entry = [str(ROOT / "benchmarks/engine_trace.py")] if TRACE else ["-m", "deploytools"]
    argv = [sys.executable, *entry, "--config", str(config_path)]
    started = time.monotonic()
    wall, switched, code, lines = timed_command([*argv, "rollback", "--env", "prod", "--yes"])
    if code != 0:
        raise RuntimeError(f"rollback failed (exit {code}): " + "\n".join(lines[-20:]))
    if os.environ.get("ROLLBACK_BENCH_LINES") == "1" or TRACE:
        print("\n".join(f"     {line}" for line in lines), flush=True)
    return wall, switched, started, started + wall


def between(samples: list[Sample], start: float, end: float) -> list[Sample]:
    return [s for s in samples if start <= s.scheduled <= end]


def main() -> int:
    # The command's bytecode, as an installed deploytools has it (pip compiles at install;
    # with PYTHONDONTWRITEBYTECODE an editable tree would be compiled again by every run).
    compileall.compile_dir(ROOT / "deploytools", quiet=1)
    client = docker.from_env(version="auto", timeout=600)
    tmp = Path(tempfile.mkdtemp(prefix=PREFIX))
    v1, v2x = V1, release_images(client, tmp, PREFIX)
    postgres = os.environ.get("POSTGRES_IMAGE", "deploytools-test/postgres:15")
    rows: list[dict[str, Any]] = []
    for path, window_s in (("watch window", 3600.0), ("cold", 0.0)):
        if path.split()[0] not in PATHS:
            continue
        project = f"{PREFIX}{'watch' if window_s else 'cold'}-{os.getpid()}"
        store = f"{project}-store"
        stack = ComposeStack(project=project, env=stack_env(postgres, v1), client=client)
        try:
            stack.down()
            stack.up()
            stack.migrate()
            config = write_config(
                tmp / f"{project}.toml",
                {"prod": stack},
                store=f"volume:{store}",
                watch_window_s=window_s,
            )
            ctx = StepContext(config=config, progress=lambda _message: None)
            print(f"-- {path}: deploy 1.15.2 and roll back, {CYCLES}x, under {RATE:.0f} req/s")
            with LoadProcess(stack.app_port, rate_per_s=RATE, max_duration_s=3600) as load:
                runs = [cycle(config.path, ctx, v2x) for _ in range(CYCLES)]
                time.sleep(1.5)
                samples = load.stop()
            for wall, switched, start, end in runs:
                during = between(samples, start, end + 1.0)
                rows.append(
                    {
                        "path": path,
                        "command_s": wall,
                        "switched_s": switched,
                        "requests": len(during),
                        "failed": len(failures(during)),
                        "p99_ms": quantile([s.latency_s for s in during], 0.99) * 1000,
                    }
                )
                print(f"   {rows[-1]}", flush=True)
        finally:
            stack.down()
            _remove_volume(client, store)  # and the store's kept helper, which mounts it
    remove_bench_tags(client, PREFIX)

    version = client.version()
    print(
        f"\nmachine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"engine {version.get('Version')}, load {RATE:.0f} req/s open model through HAProxy "
        f"({os.environ.get('PROXY_IMAGE', 'haproxy:2.8')}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(
        f"{'path':<13} {'to switched':>11} {'command':>8} {'requests':>8} {'failed':>6} {'p99':>7}"
    )
    for r in rows:
        switched = "-" if r["switched_s"] is None else f"{r['switched_s']:.2f} s"
        print(
            f"{r['path']:<13} {switched:>11} {r['command_s']:>6.2f} s {r['requests']:>8} "
            f"{r['failed']:>6} {r['p99_ms']:>5.0f}ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
