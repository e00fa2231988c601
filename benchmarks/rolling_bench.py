#!/usr/bin/env python3
"""Zero-downtime releases: a steady open-model load through the proxy while a release is
deployed and then rolled back, once with the recreate strategy (the baseline: stop, migrate,
start) and once with the rolling one (start beside, check, switch the proxy, drain).

The load: RATE requests/s of GET /health on 127.0.0.1:APP_PORT (the HAProxy proxy), each on its
own connection, timed from its scheduled start (an open model: a stalled server shows as
latency, not as fewer requests). Reported per strategy and step: requests, failed requests,
p99 of the steady load before the step, p99 during the step, p99 during the cut-over (from
the step's "stop" phase for recreate, its "switch" phase for rolling, to the step's end), and,
for rolling, p99 during the switch phase alone (from the switch to the drain: the runtime API
line that readies the new container's slot until the old server's last session ended; every
request in flight during it).

The rolling scenario repeats deploy + rollback ROLLING_BENCH_CYCLES times (default 5) and ends
with the verdict on the goal (p99 during the switch under twice the steady p99): the switch
windows of all its steps pooled against the steady windows before them, the ratio of their p99s
with a 95 % bootstrap interval; "met" only when the whole interval is under 2x. The same for the
first second after each cut (a sample large enough for a tail quantile) and the cut-over.

The baseline rollback is the rollback step with the proxy switch turned off (its recreate
path: stop, start), which is what a rollback did before the proxy.

The third scenario, "switch", is the switch alone: two warm containers of one release, cut back
and forth ROLLING_BENCH_SWITCHES times (default 100) with nothing else moving; its requests in
flight during the cuts against those of the second before each cut. ROLLING_BENCH_ONLY=NAME
runs one scenario (recreate, rolling or switch).

The load runs in a process of its own (tests/helpers/load.py, LoadProcess), as a real client would.

    .venv/bin/python benchmarks/rolling_bench.py      (or: benchmarks/run rolling)
    .venv/bin/python benchmarks/rolling_bench.py --pool DUMP...   (the verdict over saved runs)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the suite's helpers: tests/helpers

import docker  # noqa: E402
from rbac_releases import V1, release_images, remove_bench_tags  # noqa: E402

from deploytools import proxy as proxy_mod  # noqa: E402
from deploytools.config import Config  # noqa: E402
from deploytools.context import StepContext  # noqa: E402
from deploytools.engine import Container  # noqa: E402
from deploytools.steps import app_service  # noqa: E402
from deploytools.steps import deploy as deploy_step  # noqa: E402
from deploytools.steps import rollback as rollback_step  # noqa: E402
from deploytools.store.environment import EnvironmentStore  # noqa: E402
from deploytools.target import wait_until_healthy  # noqa: E402
from tests.helpers.load import LoadProcess, Sample, failures, quantile  # noqa: E402
from tests.helpers.shared_stack import (  # noqa: E402
    _remove_volume,
    stack_env,
    write_config,
)
from tests.helpers.stacks import ComposeStack  # noqa: E402

RATE = float(os.environ.get("ROLLING_BENCH_RATE", "100"))
#: Deploy + rollback pairs per rolling scenario. One switch (a few ms since the runtime API
#: switch; 0.2 s with nginx's reload) holds a few requests at 100 requests/s, so its "p99" is
#: its slowest answer; the verdict pools the switch windows of every cycle (and the steady
#: windows before them), and `--pool` those of several runs.
CYCLES = int(os.environ.get("ROLLING_BENCH_CYCLES", "5"))
BOOTSTRAP_ROUNDS = 2000
STEADY_S = 10.0
SETTLE_S = 5.0
#: Cuts of the switch-alone scenario (2 s each).
SWITCHES = int(os.environ.get("ROLLING_BENCH_SWITCHES", "100"))
PREFIX = os.environ.get("ROLLING_BENCH_PREFIX", "dtroll-bench-")
PROBES = os.environ.get("ROLLING_BENCH_PROBES", "") == "1"
#: A file to append each scenario's samples and timeline to (JSON lines), for analysis.
DUMP = os.environ.get("ROLLING_BENCH_DUMP", "")


class Timeline:
    """Progress messages with the time they came: the phases of each step."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str]] = []

    def __call__(self, message: str) -> None:
        self.events.append((time.monotonic(), message))

    def phase_start(self, phase: str, since: float) -> float | None:
        for at, message in self.events:
            if at >= since and message.endswith(f": {phase}"):
                return at
        return None


@contextlib.contextmanager
def probes(timeline: Timeline) -> Any:
    """ROLLING_BENCH_PROBES=1: the sub-steps of the drain and the step's end on the timeline
    (the proxy switches made with `proxy.switch`: the pin and the return to the service's name;
    the old container's stop and removal; record writes, the image keep tags, the lock's
    release), to tell which one a burst of slow requests follows. The switch onto the new
    container is the `switch` phase itself (prepared in `smoke`)."""
    real_switch = proxy_mod.switch
    real_drain, real_save = app_service.stop_and_remove, EnvironmentStore.save_release

    def switch(proxy: Any, pin: str | None, **kw: Any) -> None:
        upstream = pin or "the service"
        timeline(f"probe switch to {upstream} begin")
        real_switch(proxy, pin, **kw)
        timeline(f"probe switch to {upstream} end (old server drained)")

    def drain(container: Any) -> None:
        stop, remove = container.stop, container.remove

        def stop_(*a: Any, **k: Any) -> None:
            timeline(f"probe stop {container.name} begin")
            stop(*a, **k)
            timeline(f"probe stop {container.name} end")

        def remove_(*a: Any, **k: Any) -> None:
            remove(*a, **k)
            timeline(f"probe remove {container.name} end")

        container.stop, container.remove = stop_, remove_
        real_drain(container)

    def save(self: Any, record: Any) -> Any:
        timeline("probe save_release begin")
        try:
            return real_save(self, record)
        finally:
            timeline("probe save_release end")

    real_release, real_keep = EnvironmentStore.release, deploy_step.keep_images

    def release(self: Any, lock: Any) -> Any:
        timeline("probe lock release begin")
        try:
            return real_release(self, lock)
        finally:
            timeline("probe lock release end (the store's helper is removed next)")

    def keep(session: Any, record: Any, records: Any) -> None:
        timeline("probe keep_images begin")
        real_keep(session, record, records)
        timeline("probe keep_images end")

    if not PROBES:
        yield
        return
    proxy_mod.switch = switch  # type: ignore[assignment]
    app_service.stop_and_remove = drain  # type: ignore[assignment]
    EnvironmentStore.save_release = save  # type: ignore[method-assign]
    EnvironmentStore.release = release  # type: ignore[method-assign]
    deploy_step.keep_images = keep  # type: ignore[assignment]
    try:
        yield
    finally:
        proxy_mod.switch = real_switch  # type: ignore[assignment]
        app_service.stop_and_remove = real_drain  # type: ignore[assignment]
        EnvironmentStore.save_release = real_save  # type: ignore[method-assign]
        EnvironmentStore.release = real_release  # type: ignore[method-assign]
        deploy_step.keep_images = real_keep  # type: ignore[assignment]


def p99_ms(samples: list[Sample]) -> float:
    return quantile([s.latency_s for s in samples], 0.99) * 1000


def between(samples: list[Sample], start: float, end: float) -> list[Sample]:
    return [s for s in samples if start <= s.scheduled <= end]


def overlapping(samples: list[Sample], start: float, end: float) -> list[Sample]:
    """The requests in flight at some moment of [start, end]: scheduled before its end and
    answered (or failed) after its start."""
    return [s for s in samples if s.scheduled <= end and s.scheduled + s.latency_s >= start]


@dataclasses.dataclass(frozen=True)
class Windows:
    """The samples of one step's windows: steady (before it), switch, the first second after
    the cut, cut-over."""

    steady: list[Sample]
    switch: list[Sample]
    first_second: list[Sample]
    cutover: list[Sample]


def step_windows(
    timeline: Timeline, samples: list[Sample], start: float, end: float, cut_phase: str
) -> Windows:
    """A step's windows, by the phases on its timeline."""
    cut = timeline.phase_start(cut_phase, start) or start
    return Windows(
        steady=between(samples, start - STEADY_S + 1, start),
        # The switch phase alone (rolling): from the runtime API line onto the new container
        # until the old server is drained; the drain, the proxy back on the service name and the
        # record writes come after it. Every request in flight during it counts, also those
        # begun before the cut (it lasts a few ms: they are most of its requests).
        switch=overlapping(samples, cut, timeline.phase_start("drain", cut) or end),
        # A wider view of the same moment, with a sample size a tail quantile can stand on:
        # the new container's first second of traffic (the old one's stop begins in it).
        first_second=between(samples, cut, cut + 1.0),
        cutover=between(samples, cut, end),
    )


def pooled_from_dumps(paths: list[str]) -> list[str]:
    """`rolling_bench.py --pool DUMP...`: the verdict over the rolling steps of several runs'
    ROLLING_BENCH_DUMP files (more switch windows than one run holds: a tighter interval)."""
    windows = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            run = json.loads(line)
            if run["strategy"] != "rolling":
                continue
            timeline = Timeline()
            timeline.events = [(at, message) for at, message in run["events"]]
            samples = [Sample(*values) for values in run["samples"]]
            for _, start, end, cut_phase in run["steps"]:
                windows.append(step_windows(timeline, samples, start, end, cut_phase))
    return pooled_verdict(windows)


def scenario(
    strategy: str, config: Config, images: tuple[str, str], port: int, cycles: int
) -> tuple[list[dict[str, Any]], list[Windows]]:
    """Deploy images[1] then roll back, `cycles` times, under load; one row per step, and
    each rolling step's windows for the pooled verdict."""
    timeline = Timeline()
    ctx = StepContext(config=config, progress=timeline)
    steps: list[tuple[str, float, float, str]] = []
    cut_phase = "stop" if strategy == "recreate" else "switch"
    # The load runs in a process of its own, as real clients would: the deploy running here
    # then takes no interpreter time from it (measured before in one process: answers held up
    # by this process's collection pauses and by the deploy's own Python work).
    with probes(timeline), LoadProcess(port, rate_per_s=RATE, max_duration_s=3600) as load:
        for _ in range(cycles):
            time.sleep(STEADY_S)
            started = time.monotonic()
            deploy_step.run(ctx, environment="prod", image=images[1], strategy=strategy)
            steps.append(("deploy", started, time.monotonic(), cut_phase))
            time.sleep(STEADY_S)
            started = time.monotonic()
            if strategy == "recreate":
                # The rollback's recreate path: as if the environment had no proxy to switch.
                real = rollback_step.proxy
                rollback_step.proxy = SimpleNamespace(container=lambda target: None)  # type: ignore[assignment]
                try:
                    rollback_step.run(ctx, environment="prod")
                finally:
                    rollback_step.proxy = real
            else:
                rollback_step.run(ctx, environment="prod")
            steps.append(("rollback", started, time.monotonic(), cut_phase))
        time.sleep(SETTLE_S)
        samples = load.stop()
    if DUMP:
        # Every request and event of the scenario, for analysis beyond the printed table.
        with Path(DUMP).open("a") as out:
            json.dump(
                {
                    "strategy": strategy,
                    "steps": steps,
                    "events": timeline.events,
                    "samples": [dataclasses.astuple(s) for s in samples],
                },
                out,
            )
            out.write("\n")
    rows = []
    windows = []
    for name, start, end, cut_phase in steps:
        cut = timeline.phase_start(cut_phase, start) or start
        during = between(samples, start, end)
        window = step_windows(timeline, samples, start, end, cut_phase)
        if cut_phase == "switch":
            windows.append(window)
        # Where the tail comes from: the slowest requests of the cut-over, by phase.
        phases = [(at, m.rsplit(": ", 1)[-1]) for at, m in timeline.events if start <= at <= end]
        for slow in sorted(between(samples, cut, end), key=lambda x: -x.latency_s)[:3]:
            phase = next((p for at, p in reversed(phases) if at <= slow.scheduled), "?")
            print(
                f"   {strategy} {name}: {slow.latency_s * 1000:.0f} ms at "
                f"{slow.scheduled - cut:+.2f} s from the cut-over, in phase {phase}"
            )
        if PROBES:
            for at, message in timeline.events:
                if cut - 0.5 <= at <= end + 0.5:
                    print(f"     {at - cut:+7.3f} s  {message}")
            for slow in sorted(between(samples, cut, end), key=lambda x: -x.latency_s)[:12]:
                print(
                    f"     slow {slow.latency_s * 1000:4.0f} ms: planned "
                    f"{slow.scheduled - cut:+.3f}"
                    f" done {slow.scheduled + slow.latency_s - cut:+.3f} (began "
                    f"{slow.began_s * 1000:.0f}, connected {slow.connected_s * 1000:.0f}, "
                    f"answered {slow.answered_s * 1000:.0f} ms)"
                )
        rows.append(
            {
                "strategy": strategy,
                "step": name,
                "seconds": end - start,
                "requests": len(during),
                "failed": len(failures(during)),
                "steady_p99_ms": p99_ms(window.steady),
                "step_p99_ms": p99_ms(during),
                "cutover_p99_ms": p99_ms(window.cutover),
                "switch_p99_ms": p99_ms(window.switch) if cut_phase == "switch" else float("nan"),
            }
        )
    return rows, windows


def switch_only(stack: ComposeStack, client: Any, switches: int) -> list[str]:
    """The switch alone: two warm app containers of one release behind the proxy and nothing
    else moving (no start, health wait, warm-up or stop), cut back and forth `switches` times
    on one runtime API session under the same load. What the switch costs the requests it
    carries, apart from the deploy around it on a small machine."""
    stack.run_compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "app=2", "app")
    project = f"com.docker.compose.project={stack.project}"
    apps = [
        Container(c)
        for c in client.containers.list(
            filters={"label": [project, "com.docker.compose.service=app"]}
        )
    ]
    gateway = Container(
        client.containers.list(filters={"label": [project, "com.docker.compose.service=proxy"]})[0]
    )
    for app in apps:
        wait_until_healthy(app, timeout_s=60)
    addresses = [proxy_mod.address(app, gateway) for app in apps]
    cuts: list[tuple[float, float]] = []  # (cut, drained)
    api = proxy_mod.RuntimeApi(gateway)
    try:
        with LoadProcess(stack.app_port, rate_per_s=RATE, max_duration_s=3600) as load:
            time.sleep(2.0)
            for i in range(switches):
                prepared = proxy_mod.prepare(gateway, addresses[i % 2], timeout_s=60, session=api)
                time.sleep(1.0)
                cut = time.monotonic()
                proxy_mod.cut(prepared)
                cuts.append((cut, time.monotonic()))
                time.sleep(1.0)
            time.sleep(1.0)
            samples = load.stop()
    finally:
        api.close()
    # Steady: after the prepare, before the cut; switch: every request in flight during it.
    steady = [s.latency_s for cut, _ in cuts for s in between(samples, cut - 0.9, cut - 0.1)]
    switch = [s.latency_s for cut, end in cuts for s in overlapping(samples, cut, end)]
    lasted = sorted(end - cut for cut, end in cuts)
    ratio, low, high = ratio_interval(switch, steady, random.Random(9))
    verdict = "under 2x" if high < 2 else "over 2x" if low >= 2 else "2x inside the interval"
    return [
        f"switch alone: {switches} cuts between two warm containers, "
        f"{len(failures(samples))} of {len(samples)} requests failed; a cut lasted "
        f"{lasted[len(lasted) // 2] * 1000:.0f} ms at the median (to the old server drained)",
        f"  steady p99 {quantile(steady, 0.99) * 1000:.0f} ms ({len(steady)} requests), "
        f"switch p99 {quantile(switch, 0.99) * 1000:.0f} ms ({len(switch)} requests): "
        f"{ratio:.2f}x (95 % interval {low:.2f}-{high:.2f}x), {verdict}",
    ]


def ratio_interval(
    during: list[float], steady: list[float], rng: random.Random
) -> tuple[float, float, float]:
    """p99(during) / p99(steady), with a 95 % percentile-bootstrap interval: both pools
    resampled with replacement BOOTSTRAP_ROUNDS times (the ratio of two tail quantiles of a few
    hundred samples moves a lot from run to run; the interval says how much)."""
    ratio = quantile(during, 0.99) / quantile(steady, 0.99)
    ratios = sorted(
        quantile(rng.choices(during, k=len(during)), 0.99)
        / quantile(rng.choices(steady, k=len(steady)), 0.99)
        for _ in range(BOOTSTRAP_ROUNDS)
    )
    return ratio, quantile(ratios, 0.025), quantile(ratios, 0.975)


def pooled_verdict(windows: list[Windows]) -> list[str]:
    """The goal over every rolling step of the run: the switch windows pooled against the
    steady windows pooled, and the same for the whole cut-over."""
    if not windows:
        return []
    rng = random.Random(9)
    steady = [s.latency_s for w in windows for s in w.steady]
    steady_p99 = quantile(steady, 0.99)
    lines = [
        f"pooled over {len(windows)} rolling steps: steady p99 {steady_p99 * 1000:.0f}"
        f" ms ({len(steady)} requests)"
    ]
    for label, pool in (
        ("switch", [s.latency_s for w in windows for s in w.switch]),
        ("1st s", [s.latency_s for w in windows for s in w.first_second]),
        ("cut-over", [s.latency_s for w in windows for s in w.cutover]),
    ):
        ratio, low, high = ratio_interval(pool, steady, rng)
        # A steadier figure than a tail quantile: the share of requests slower than twice the
        # steady p99 (in the steady windows themselves it is under 1 %).
        over = sum(1 for x in pool if x > 2 * steady_p99) / len(pool)
        verdict = (
            "under 2x: goal met"
            if high < 2
            else "over 2x: goal missed"
            if low >= 2
            else "2x inside the interval: not shown either way"
        )
        lines.append(
            f"  {label:<8} p99 {quantile(pool, 0.99) * 1000:.0f} ms ({len(pool)} requests): "
            f"{ratio:.2f}x the steady p99 (95 % interval {low:.2f}-{high:.2f}x), {verdict}; "
            f"{over:.1%} of them slower than twice the steady p99"
        )
    # Per step, against its own steady p99 (machine noise moves both together): the steps
    # whose switch had a request slower than twice it.
    over_own = [
        w for w in windows if w.switch and max(x.latency_s for x in w.switch) > 2 * own_p99(w)
    ]
    lines.append(
        f"  switch, per step: {len(over_own)} of {len(windows)} steps had a request in flight "
        "during the switch slower than twice that step's steady p99"
    )
    return lines


def own_p99(window: Windows) -> float:
    return quantile([s.latency_s for s in window.steady], 0.99)


def main() -> int:
    if sys.argv[1:2] == ["--pool"]:
        for line in pooled_from_dumps(sys.argv[2:]):
            print(line)
        return 0
    client = docker.from_env(version="auto", timeout=600)
    tmp = Path(tempfile.mkdtemp(prefix=PREFIX))
    v1, v2x = V1, release_images(client, tmp, PREFIX)
    postgres = os.environ.get("POSTGRES_IMAGE", "deploytools-test/postgres:15")
    rows: list[dict[str, Any]] = []
    windows: list[Windows] = []
    only = os.environ.get("ROLLING_BENCH_ONLY", "")
    switch_lines: list[str] = []
    for strategy in [s for s in ("recreate", "rolling", "switch") if only in ("", s)]:
        project = f"{PREFIX}{strategy}-{os.getpid()}"
        store = f"{project}-store"
        stack = ComposeStack(project=project, env=stack_env(postgres, v1), client=client)
        try:
            stack.down()
            stack.up()
            stack.migrate()
            if strategy == "switch":
                print(f"-- the switch alone, {SWITCHES}x, under {RATE:.0f} req/s", flush=True)
                switch_lines = switch_only(stack, client, SWITCHES)
                continue
            # The watch window off: the rollback starts the older release beside and switches
            # (benchmarks/rollback_bench.py measures the switch back to a kept container).
            config = write_config(
                tmp / f"{strategy}.toml",
                {"prod": stack},
                store=f"volume:{store}",
                watch_window_s=0,
            )
            # The baseline's failures show in one cycle; the verdict needs the rolling ones.
            cycles = 1 if strategy == "recreate" else CYCLES
            print(
                f"-- {strategy}: deploy 1.15.2 and roll back, {cycles}x, under {RATE:.0f} req/s",
                flush=True,
            )
            more_rows, more_windows = scenario(strategy, config, (v1, v2x), stack.app_port, cycles)
            rows += more_rows
            windows += more_windows
        finally:
            stack.down()
            _remove_volume(client, store)
    remove_bench_tags(client, PREFIX)

    version = client.version()
    print(
        f"\nmachine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"engine {version.get('Version')}, load {RATE:.0f} req/s open model through HAProxy "
        f"({os.environ.get('PROXY_IMAGE', 'haproxy:2.8')})"
    )
    header = (
        f"{'strategy':<9} {'step':<9} {'seconds':>7} {'requests':>8} {'failed':>6} "
        f"{'steady p99':>10} {'step p99':>9} {'cut-over p99':>12} {'switch p99':>10}"
    )
    if rows:
        print(header)
    for r in rows:
        switch = "-" if r["switch_p99_ms"] != r["switch_p99_ms"] else f"{r['switch_p99_ms']:.0f}ms"
        print(
            f"{r['strategy']:<9} {r['step']:<9} {r['seconds']:>7.1f} {r['requests']:>8} "
            f"{r['failed']:>6} {r['steady_p99_ms']:>8.0f}ms {r['step_p99_ms']:>7.0f}ms "
            f"{r['cutover_p99_ms']:>10.0f}ms {switch:>10}"
        )
    for line in pooled_verdict(windows) + switch_lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
