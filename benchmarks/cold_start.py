"""Cold start of the command line: `deploytools --help` and `deploytools deploy --help` against a
bare `python -c pass`, each a new process, the runs interleaved so that a change in the machine's
load touches all three alike.

    .venv/bin/python benchmarks/cold_start.py [--runs 21] [--every-command] [--against DIR]

Prints the median wall time of each (with its quartiles), the ratio of each to the bare
interpreter, and the median CPU time (user + system) of the process: on a shared machine the wall
time grows with the load, the CPU time much less. "Cold" is a new interpreter each run, the
way a person or a CI job starts it; the bytecode caches are warm (they are after the first run
of any install). --every-command also times `COMMAND --help` for each command and subcommand
(median of a few runs each). The goal is under 300 ms for every --help on the machines the
project is built on.

--against DIR times another source tree of deploytools the same way, interleaved with this one
(for a before/after on the same machine at the same load), for example the tree before a change:
`git archive COMMIT | tar -x -C /tmp/before`. Each tree runs as `python -c` with PYTHONPATH set
to it, in this virtual environment.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_MS = 300.0


#: How each tree's command line is started (what the `deploytools` script does).
ENTRY = "import sys; sys.argv[0] = 'deploytools'; from deploytools.cli import main; main()"


#: CPU milliseconds of each timed run, by argv (read from the children's resource usage).
CPU_MS: dict[tuple[str, ...], list[float]] = {}


def _children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def timed(argv: list[str], pythonpath: str | None = None) -> float:
    """Wall milliseconds of one run of `argv`, which must succeed (its CPU time is kept in
    CPU_MS)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    # Run from the tree itself: `python -c` puts the working directory first on sys.path.
    cpu_before = _children_cpu_ms()
    begin = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False, env=env, cwd=pythonpath)
    elapsed = (time.perf_counter() - begin) * 1000
    CPU_MS.setdefault((*argv, pythonpath or ""), []).append(_children_cpu_ms() - cpu_before)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, median, q3


def every_command(python: str) -> list[list[str]]:
    """The argv (after `deploytools`) of every command's --help, read from the click group."""
    import click

    from deploytools.cli import cli

    found: list[list[str]] = []

    def walk(group: click.Group, path: list[str]) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if command is None:
                continue
            found.append([*path, name, "--help"])
            if isinstance(command, click.Group):
                walk(command, [*path, name])

    walk(cli, [])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each (default 21)")
    parser.add_argument(
        "--every-command", action="store_true", help="also time every COMMAND --help"
    )
    parser.add_argument("--against", help="another deploytools source tree to time alike")
    args = parser.parse_args()
    python = sys.executable
    here = str(Path(__file__).resolve().parents[1])
    cases: dict[str, tuple[list[str], str | None]] = {
        "python -c pass": ([python, "-c", "pass"], None),
        "deploytools --help": ([python, "-c", ENTRY, "--help"], here),
        "deploytools deploy --help": ([python, "-c", ENTRY, "deploy", "--help"], here),
    }
    if args.against:
        cases["  against: --help"] = ([python, "-c", ENTRY, "--help"], args.against)
        cases["  against: deploy --help"] = (
            [python, "-c", ENTRY, "deploy", "--help"],
            args.against,
        )
    for argv, path in cases.values():  # the bytecode caches are written once, before timing
        timed(argv, path)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (argv, path) in cases.items():
            samples[name].append(timed(argv, path))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cold start, {args.runs} runs each, interleaved; load average {load:.1f}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")  # fmt: skip
    bare = statistics.median(samples["python -c pass"])
    print(f"{'':28} {'median':>9} {'q1':>8} {'q3':>8} {'x bare':>7} {'cpu':>9}")
    for name, values in samples.items():
        q1, median, q3 = quartiles(values)
        argv, path = cases[name]
        cpu = statistics.median(CPU_MS[(*argv, path or "")])
        print(
            f"{name:28} {median:7.1f}ms {q1:6.1f}ms {q3:6.1f}ms {median / bare:6.1f}x {cpu:7.1f}ms"
        )
    worst = max(statistics.median(samples[n]) for n in cases if n.startswith("deploytools"))
    if args.every_command:
        print(f"\nevery COMMAND --help (median of 5 runs), goal under {GOAL_MS:.0f} ms:")
        for tail in every_command(python):
            # The installed script, as a user runs it.
            command = str(Path(python).with_name("deploytools"))
            median = statistics.median(timed([command, *tail]) for _ in range(5))
            worst = max(worst, median)
            flag = "" if median < GOAL_MS else "  over the goal"
            print(f"  deploytools {' '.join(tail):40} {median:7.1f}ms{flag}")
    verdict = "under" if worst < GOAL_MS else "OVER"
    print(f"\nslowest --help median {worst:.1f} ms: {verdict} the {GOAL_MS:.0f} ms goal")


if __name__ == "__main__":
    main()
