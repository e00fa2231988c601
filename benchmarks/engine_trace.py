#!/usr/bin/env python3
"""Run deploytools' command line with every request to the Docker engine traced: where a
command's time goes before and after its first phase.

    .venv/bin/python benchmarks/engine_trace.py [deploytools arguments...]

On exit, prints to stderr one line per engine request (its start from the process's start, its
duration, method and path, and the deploytools function that made it), then a summary: the
requests counted by kind, and when the imports were done. Used by benchmarks/rollback_bench.py
with ROLLBACK_BENCH_TRACE=1. The tracer loads requests at the start (to patch it), so the
import figures it prints are not the plain command's: time the command itself for those.
"""

from __future__ import annotations

import atexit
import collections
import sys
import time
import traceback
from typing import Any

STARTED = time.monotonic()
CALLS: list[tuple[float, float, str, str, str]] = []


def _caller() -> str:
    """The innermost deploytools frame outside the engine package: who asked."""
    for frame in reversed(traceback.extract_stack()):
        name = frame.filename.replace("\\", "/")
        if "/deploytools/" in name and "/deploytools/engine/" not in name:
            module = name.rsplit("/deploytools/", 1)[1].removesuffix(".py").replace("/", ".")
            return f"{module}.{frame.name}"
    return "?"


def install() -> None:
    import requests.sessions

    send = requests.sessions.Session.send

    def traced(self: Any, request: Any, **options: Any) -> Any:
        begin = time.monotonic()
        try:
            return send(self, request, **options)
        finally:
            path = str(request.path_url).split("?")[0]
            # /v1.41/containers/ID/json -> /containers/{id}/json, for counting by kind
            parts = [p for p in path.split("/") if p][1:]
            shape = "/" + "/".join(p if len(p) < 40 else "{id}" for p in parts)
            took = time.monotonic() - begin
            CALLS.append((begin - STARTED, took, request.method, shape, _caller()))

    requests.sessions.Session.send = traced  # type: ignore[method-assign]


def report() -> None:
    out = sys.stderr
    print(f"\n-- engine requests ({len(CALLS)}):", file=out)
    for at, took, method, shape, caller in CALLS:
        print(f"{at:7.3f} s {took * 1000:6.1f} ms  {method:6} {shape:38} {caller}", file=out)
    kinds = collections.Counter(f"{m} {s}" for _, _, m, s, _ in CALLS)
    print("-- by kind: " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common()), file=out)
    print(f"-- total {time.monotonic() - STARTED:.3f} s", file=out)


def main() -> None:
    install()
    atexit.register(report)
    sys.argv = ["deploytools", *sys.argv[1:]]
    from deploytools.cli import main as cli_main

    print(f"-- imports done at {time.monotonic() - STARTED:.3f} s", file=sys.stderr)
    cli_main()


if __name__ == "__main__":
    main()
