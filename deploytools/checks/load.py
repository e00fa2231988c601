"""The open-model latency test: requests at a fixed arrival rate, each timed from its schedule.

A closed loop (send, wait, send) slows down with the server and so hides its tail: a 2-second
stall costs one slow sample instead of the forty requests that would have arrived meanwhile
("coordinated omission"). Here request i is due at t0 + i/rate whatever happened before; if
every worker is busy it waits in the queue, and that wait is part of its latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from deploytools.checks.http import Answer


@dataclass(frozen=True)
class LoadResult:
    """Every request's latency (ms, from its scheduled start) and which of them failed."""

    rate_per_s: float
    duration_s: float
    latencies_ms: tuple[float, ...]
    errors: int
    error_examples: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.latencies_ms)


def open_load(
    send: Callable[[float], Answer],
    *,
    rate_per_s: float,
    duration_s: float,
    concurrency: int,
    ok: Callable[[Answer], bool],
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> LoadResult:
    """Send `rate_per_s * duration_s` requests on schedule; `send(scheduled_start)` makes one.

    :param send: performs one request, timing it from the perf_counter value it is given.
    :param rate_per_s: arrivals per second (fixed, not adapted to the server's speed).
    :param duration_s: how long arrivals go on.
    :param concurrency: worker threads; a request due while all are busy waits (and is timed).
    :param ok: whether an answer counts as a success.
    """
    total = max(1, round(rate_per_s * duration_s))
    answers: list[Answer] = []
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="load") as pool:
        futures = []
        t0 = clock()
        for i in range(total):
            due = t0 + i / rate_per_s
            wait = due - clock()
            if wait > 0:
                sleep(wait)
            futures.append(pool.submit(send, due))
        # Every request carries its own timeout, so these complete.
        answers = [f.result() for f in futures]
    failed = [a for a in answers if not ok(a)]
    examples: list[str] = []
    for a in failed:
        text = a.describe()
        if text not in examples and len(examples) < 3:
            examples.append(text)
    return LoadResult(
        rate_per_s=rate_per_s,
        duration_s=duration_s,
        latencies_ms=tuple(a.elapsed_ms for a in answers),
        errors=len(failed),
        error_examples=tuple(examples),
    )
