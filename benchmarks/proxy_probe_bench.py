"""The rolling deploy's smoke check and warm-up, asked from the proxy container (bash's
/dev/tcp: deploytools.proxy.ASK_SCRIPT, WARM_SCRIPT) against the way they were sent before
(a python3 urllib program exec'd inside the app container). Wall time of each exec, median and
max of N runs, on a throwaway network with an app container (a python3 HTTP server on 8000,
/healthz answering `true`) and a proxy container ($PROXY_IMAGE, default the suite's
deploytools-test/haproxy:bookworm). Run under the shared Docker lock:

    flock /tmp/dt-docker.lock .venv/bin/python benchmarks/proxy_probe_bench.py [N]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import docker

from deploytools import proxy
from deploytools.proxy_settings import HealthAnswer

APP = (
    "import http.server\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.send_header('Content-Length', '4')\n"
    "        self.end_headers(); self.wfile.write(b'true')\n"
    "    def log_message(self, *a): pass\n"
    "class S(http.server.ThreadingHTTPServer):\n"
    "    request_queue_size = 128\n"
    "S(('0.0.0.0', 8000), H).serve_forever()\n"
)
OLD_SMOKE = (
    "import urllib.request;"
    "r = urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=5);"
    "print(r.status, r.read().decode())"
)
OLD_WARM = (
    "import concurrent.futures as f, urllib.request as u\n"
    "def get(_):\n"
    "    with u.urlopen('http://127.0.0.1:8000/healthz', timeout=5) as r:\n"
    "        return r.status\n"
    "with f.ThreadPoolExecutor(16) as pool:\n"
    "    for _ in range(3):\n"
    "        assert set(pool.map(get, range(16))) == {200}\n"
)


def timed(container: object, argv: list[str]) -> float:
    start = time.monotonic()
    code, output = container.exec_run(argv)  # type: ignore[attr-defined]
    assert code == 0, output
    return (time.monotonic() - start) * 1000


def main(runs: int) -> None:
    client = docker.from_env()
    app_image = os.environ.get("BENCH_APP_IMAGE", "rbac-api-test:1.15.1")
    proxy_image = os.environ.get("PROXY_IMAGE", "deploytools-test/haproxy:bookworm")
    name = f"dtproxy-bench-{os.getpid()}"
    network = client.networks.create(name)
    made = []
    try:
        app = client.containers.run(
            app_image, ["python3", "-c", APP], name=f"{name}-app", network=name, detach=True,
            entrypoint=[], user="10001",
        )  # fmt: skip
        made.append(app)
        gateway = client.containers.run(
            proxy_image, ["sleep", "infinity"], name=f"{name}-proxy", network=name, detach=True,
            entrypoint=[],
        )  # fmt: skip
        made.append(gateway)
        app.reload()
        address = app.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
        time.sleep(1.0)
        health = HealthAnswer("/healthz", 200, True)
        cases = {
            "smoke, python3 in the app (before)": (app, ["python3", "-c", OLD_SMOKE]),
            "smoke, bash in the proxy (now)": (gateway, proxy.ask_argv(address, 8000, "/healthz")),
            "warm 16x3, python3 in the app (before)": (app, ["python3", "-c", OLD_WARM]),
            "warm 16x3, bash in the proxy (now)": (
                gateway,
                proxy.warm_argv(address, 8000, health, concurrency=16, rounds=3),
            ),
        }
        for label, (container, argv) in cases.items():
            timed(container, argv)  # the first run warms the page cache
            times = [timed(container, argv) for _ in range(runs)]
            print(
                f"{label:<42} median {statistics.median(times):6.1f} ms  "
                f"max {max(times):6.1f} ms  (n={runs})"
            )
    finally:
        for container in made:
            container.remove(force=True)
        network.remove()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
