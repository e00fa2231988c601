"""An open-model HTTP load for zero-downtime tests and benchmarks (127.0.0.1 unless `hosts`).

Requests are issued at a fixed arrival rate whatever the answers take (an open model: a slow or
failing server does not slow the load down), each on its own connection, and each is timed from
its *scheduled* start, so a stalled server shows as latency rather than as fewer requests
(no coordinated omission). A failure is a connection error, a timeout or a status other than 200.
"""

from __future__ import annotations

import dataclasses
import gc
import http.client
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


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
    #: The addresses asked, in turn (request i goes to hosts[i % len(hosts)]): a client-side
    #: round robin over several nodes, as a load balancer without health checks does.
    hosts: tuple[str, ...] = ("127.0.0.1",)
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _one(self, scheduled: float, host: str = "127.0.0.1") -> None:
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        error = ""
        began = time.monotonic() - scheduled
        connected = answered = 0.0
        try:
            conn = http.client.HTTPConnection(host, self.port, timeout=self.timeout_s)
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
                pool.submit(self._one, scheduled, self.hosts[i % len(self.hosts)])
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


class LoadProcess:
    """An OpenLoad in a process of its own (a benchmark's load): the deploy running in the
    benchmark's process then takes no interpreter time from it, and no collection pause of
    that process shows in a sample. Time stamps stay comparable: time.monotonic() is the
    system's monotonic clock, the same in every process."""

    def __init__(self, port: int, **settings: Any) -> None:
        self.settings = {"port": port, **settings}
        self.timeout_s = float(settings.get("timeout_s", OpenLoad.timeout_s))
        self._samples: list[Sample] | None = None
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> LoadProcess:
        self._process = subprocess.Popen(
            [sys.executable, __file__, json.dumps(self.settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def stop(self) -> list[Sample]:
        """Stop the load; its samples, sorted by their planned start (again on later calls)."""
        if self._samples is None:
            assert self._process is not None, "start() first"
            out, _ = self._process.communicate("stop\n", timeout=self.timeout_s + 60)
            if self._process.returncode != 0:
                raise RuntimeError(f"the load process failed (exit {self._process.returncode})")
            self._samples = [Sample(*values) for values in json.loads(out)]
        return self._samples

    def __enter__(self) -> LoadProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def failures(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if not s.ok]


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def _serve_in_this_process(settings: dict[str, Any]) -> None:
    """LoadProcess's child: the load until a line comes on stdin, then its samples on stdout."""
    # Collection pauses would hold every thread of this process, answers included: tens of ms
    # once tens of thousands of samples are kept. The load makes no reference cycle it needs
    # freed within a run, so the collector stays off here.
    gc.disable()
    if "hosts" in settings:
        settings = {**settings, "hosts": tuple(settings["hosts"])}
    load = OpenLoad(**settings).start()
    sys.stdin.readline()
    json.dump([dataclasses.astuple(s) for s in load.stop()], sys.stdout)


if __name__ == "__main__":
    _serve_in_this_process(json.loads(sys.argv[1]))
