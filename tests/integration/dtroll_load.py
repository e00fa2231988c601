"""An open-model HTTP load for zero-downtime tests and benchmarks (127.0.0.1 only).

Requests are issued at a fixed arrival rate whatever the answers take (an open model: a slow or
failing server does not slow the load down), each on its own connection, and each is timed from
its *scheduled* start, so a stalled server shows as latency rather than as fewer requests
(no coordinated omission). A failure is a connection error, a timeout or a status other than 200.
"""

from __future__ import annotations

import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    scheduled: float  # time.monotonic() of the planned start
    latency_s: float  # from the planned start to the end of the answer
    ok: bool
    error: str = ""
    # Where the latency went (seconds from the planned start): the request began (a late start
    # is the load generator's own delay), the connection was accepted, the answer's head came.
    began_s: float = 0.0
    connected_s: float = 0.0
    answered_s: float = 0.0


@dataclass
class OpenLoad:
    port: int
    rate_per_s: float = 100.0
    path: str = "/health"
    max_duration_s: float = 300.0
    timeout_s: float = 10.0
    workers: int = 64
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _one(self, scheduled: float) -> None:
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        error = ""
        began = time.monotonic() - scheduled
        connected = answered = 0.0
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
            try:
                conn.connect()
                connected = time.monotonic() - scheduled
                conn.request("GET", self.path, headers={"Connection": "close"})
                response = conn.getresponse()
                answered = time.monotonic() - scheduled
                response.read()
                if response.status != 200:
                    error = f"HTTP {response.status}"
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        sample = Sample(
            scheduled, time.monotonic() - scheduled, not error, error, began, connected, answered
        )
        with self._lock:
            self.samples.append(sample)

    def _run(self) -> None:
        interval = 1.0 / self.rate_per_s
        start = time.monotonic() + 0.05
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            i = 0
            while not self._stop.is_set():
                scheduled = start + i * interval
                if scheduled - start > self.max_duration_s:
                    break
                ahead = scheduled - time.monotonic()
                if ahead > 0.02:
                    self._stop.wait(ahead - 0.01)
                pool.submit(self._one, scheduled)
                i += 1

    def start(self) -> OpenLoad:
        self._thread = threading.Thread(target=self._run, name="open-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 30)
        with self._lock:
            return sorted(self.samples, key=lambda s: s.scheduled)

    def __enter__(self) -> OpenLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def failures(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if not s.ok]


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]
