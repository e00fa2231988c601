"""deploytools' own proxy, for a service nobody here wrote: a ten-line python3 app on port 8000
whose health route /healthz answers a bare `true`, and whose Compose file has NO proxy service.
Nothing of it is in deploy.toml's [proxy]: the port and the health route are read from the
Compose file's healthcheck. On the real engine, under a steady open-model load:

- a first rolling deploy starts deploytools' own HAProxy container; the next rolling deploy and
  a rollback fail no request through it;
- the adoption of a stack whose app publishes its port itself: `proxy start` on another port
  (no request fails on either port), then, the app's `ports` replaced by `expose`, a rolling
  deploy moves the app behind the proxy with no request failed.

Compose projects dtproxy-PID and dtproxy-adopt-PID, store volumes of their own, images
dtproxy-tiny:1 and :2 (a release image as the python3 base), all removed at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from deploytools import proxy
from deploytools.cli import cli
from tests.helpers.load import OpenLoad, failures
from tests.helpers.stacks import ReleaseImages, compose_command, free_port, wait_until

pytestmark = pytest.mark.integration

REPOSITORY = "dtproxy-tiny"
RATE = 50.0

#: The whole service: / says its version, /healthz answers `true`. Its listen backlog is a real
#: server's (gunicorn's and uvicorn's are 2048): with http.server's 5, the warm-up's 16
#: concurrent connections overflow it and the kernel resets some of them.
APP = """\
import http.server, os
VERSION = os.environ["TINY_VERSION"].encode()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"true" if self.path == "/healthz" else VERSION
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # a real server's backlog (http.server's is 5)
Server(("0.0.0.0", 8000), Handler).serve_forever()
"""

DOCKERFILE = """\
FROM {base}
COPY app.py /tiny/app.py
ENV TINY_VERSION={version}
LABEL deploytools.migrations.expand-only="true" org.opencontainers.image.version="{version}"
HEALTHCHECK NONE
USER 10001
ENTRYPOINT []
CMD ["python3", "/tiny/app.py"]
"""

#: No proxy service; the app's port and health route only in its healthcheck. {app_ports} is
#: the adoption test's directly published port, or nothing.
COMPOSE = """\
services:
  db:
    image: ${{POSTGRES_IMAGE}}
    environment:
      POSTGRES_USER: tiny
      POSTGRES_DB: tiny
      POSTGRES_PASSWORD: ${{POSTGRES_PASSWORD:?set it}}
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U tiny -d tiny"]
      interval: 1s
      timeout: 3s
      retries: 30
  web:
    image: ${{APP_IMAGE:-{REPOSITORY}:1}}
{app_ports}    healthcheck:
      test:
        - CMD
        - python3
        - -c
        - import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=2)
      interval: 1s
      timeout: 3s
      retries: 3
    stop_grace_period: 2s
"""


def tiny_image(client: Any, base: str, version: str) -> str:
    tag = f"{REPOSITORY}:{version}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in (
            ("Dockerfile", DOCKERFILE.format(base=base, version=version)),
            ("app.py", APP),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    client.images.build(fileobj=buffer, custom_context=True, tag=tag, rm=True, forcerm=True)
    return tag


@pytest.fixture(scope="module")
def tiny(docker_client: Any, release_images: ReleaseImages) -> Iterator[dict[str, str]]:
    """Two releases of the tiny app, expand-only (its migration does nothing)."""
    base = release_images["1.15.1"]  # Debian with python3: the app's runtime, nothing more
    images = {v: tiny_image(docker_client, base, v) for v in ("1", "2")}
    yield images
    for image in docker_client.images.list(name=REPOSITORY):
        for tag in image.tags:
            with contextlib.suppress(Exception):
                docker_client.images.remove(tag, force=True)


@dataclass
class TinyEnv:
    name: str
    project: str
    dir: Path
    env: dict[str, str]
    config: Path
    proxy_port: int
    client: Any
    direct_port: int | None = None

    def compose(self, *args: str) -> None:
        subprocess.run(
            [*compose_command(), "-p", self.project, "-f", str(self.dir / "compose.yml"), *args],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
            timeout=180,
        )

    def cli(self, *args: str) -> Any:
        return CliRunner().invoke(
            cli, ["--config", str(self.config), "--json", *args], catch_exceptions=False
        )

    def version(self, port: int | None = None) -> str:
        url = f"http://127.0.0.1:{port or self.proxy_port}/"
        return requests.get(url, timeout=5).text

    def containers(self, service: str) -> list[Any]:
        labels = [f"com.docker.compose.project={self.project}"]
        labels.append(f"com.docker.compose.service={service}")
        return self.client.containers.list(filters={"label": labels})

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.compose("down", "-v", "--remove-orphans", "--timeout", "3")
        for container in self.client.containers.list(all=True, filters={"name": self.project}):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        for volume in self.client.volumes.list():
            if volume.name.startswith((f"{self.project}-", f"{self.project}_")):
                with contextlib.suppress(Exception):
                    volume.remove(force=True)
        for image in self.client.images.list(name=REPOSITORY):
            for tag in image.tags:
                if tag.startswith(f"{REPOSITORY}:{self.name}-release-"):
                    with contextlib.suppress(Exception):
                        self.client.images.remove(tag)


def make_env(
    client: Any, postgres_image: str, tmp: Path, name: str, *, direct_port: int | None
) -> TinyEnv:
    project = f"dtproxy-{name}-{os.getpid()}"
    proxy_port = free_port()
    ports = f'    ports: ["{direct_port}:8000"]\n' if direct_port else ""
    (tmp / "compose.yml").write_text(COMPOSE.format(REPOSITORY=REPOSITORY, app_ports=ports))
    env = {"POSTGRES_IMAGE": postgres_image, "POSTGRES_PASSWORD": secrets.token_urlsafe(12)}
    variables = ", ".join(f'{k} = "{v}"' for k, v in sorted(env.items()))
    # Adoption: the proxy on a port of its own ([proxy.ports]) while the app keeps its own;
    # otherwise the base_url's port, the default.
    proxy_table = f'[proxy.ports]\n{name} = "127.0.0.1:{proxy_port}"\n' if direct_port else ""
    (tmp / "deploy.toml").write_text(
        f"""
[project]
name = "tiny"
image_repository = "{REPOSITORY}"
compose_files = ["compose.yml"]
app_service = "web"
database_service = "db"
migration_command = ["python3", "-c", "print('no migrations')"]

[environments.{name}]
compose_project = "{project}"
base_url = "http://127.0.0.1:{proxy_port}"
variables = {{ {variables} }}

[backups]
store = "volume:{project}-store"

[deploy]
health_timeout_s = 30.0
# The proxy's tests count one app container after a deploy: no container kept for the watch.
watch_window_s = 0
lock_ttl_s = 600

{proxy_table}"""
    )
    return TinyEnv(name, project, tmp, env, tmp / "deploy.toml", proxy_port, client, direct_port)


@pytest.fixture
def tiny_env(docker_client: Any, postgres_image: str, tmp_path: Path) -> Iterator[TinyEnv]:
    env = make_env(docker_client, postgres_image, tmp_path, "own", direct_port=None)
    env.remove()
    try:
        yield env
    finally:
        env.remove()


@pytest.fixture
def adopt_env(docker_client: Any, postgres_image: str, tmp_path: Path) -> Iterator[TinyEnv]:
    env = make_env(docker_client, postgres_image, tmp_path, "adopt", direct_port=free_port())
    env.remove()
    try:
        yield env
    finally:
        env.remove()


def under_load(port: int, run: Any) -> tuple[Any, list[Any]]:
    with OpenLoad(port, rate_per_s=RATE, path="/") as load:
        result = run()
    samples = load.stop()
    assert len(samples) > 0
    return result, samples


def test_rolling_deploys_and_a_rollback_through_deploytools_own_proxy(
    tiny_env: TinyEnv, tiny: dict[str, str]
) -> None:
    env = tiny_env
    first = env.cli("deploy", "--env", "own", "--image", tiny["1"], "--strategy", "rolling")
    assert first.exit_code == 0, first.output
    # No proxy in the Compose file: deploytools started its own, on the base_url's port.
    (gateway,) = env.containers(proxy.OWNED_SERVICE)
    assert gateway.labels[proxy.OWNED_LABEL] == "owned"
    assert gateway.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert env.version() == "1"

    second, samples = under_load(
        env.proxy_port,
        lambda: env.cli("deploy", "--env", "own", "--image", tiny["2"], "--strategy", "rolling"),
    )
    assert second.exit_code == 0, second.output
    assert failures(samples) == []
    record = json.loads(second.stdout)["result"]["record"]
    assert record["strategy"] == "rolling" and record["outcome"] == "succeeded"
    assert env.version() == "2"
    (app,) = env.containers("web")
    assert app.attrs["Config"]["Image"] == tiny["2"]

    back, samples = under_load(env.proxy_port, lambda: env.cli("rollback", "--env", "own", "--yes"))
    assert back.exit_code == 0, back.output
    assert failures(samples) == []
    assert env.version() == "1"
    assert [c.id for c in env.containers(proxy.OWNED_SERVICE)] == [gateway.id]


def test_a_release_whose_health_route_does_not_answer_is_abandoned(
    tiny_env: TinyEnv, tiny: dict[str, str], tmp_path: Path
) -> None:
    env = tiny_env
    assert (
        env.cli("deploy", "--env", "own", "--image", tiny["1"], "--strategy", "rolling").exit_code
        == 0
    )
    # The configured answer is not the app's: the smoke check from the proxy says so.
    config = env.config.read_text() + '\n[proxy]\nhealth_expect = { status = "ok" }\n'
    env.config.write_text(config)
    result, samples = under_load(
        env.proxy_port,
        lambda: env.cli("deploy", "--env", "own", "--image", tiny["2"], "--strategy", "rolling"),
    )
    assert result.exit_code == 1, result.output
    assert failures(samples) == []
    error = json.loads(result.stdout)["error"]
    assert "smoke check" in error["message"] and "/healthz" in error["message"]
    assert "old release kept serving" in error["untouched"]
    assert env.version() == "1"


def test_a_stack_publishing_its_own_port_is_adopted_without_a_failed_request(
    adopt_env: TinyEnv, tiny: dict[str, str]
) -> None:
    env = adopt_env
    direct = env.direct_port
    assert direct is not None
    env.compose("up", "-d")
    wait_until(lambda: env.version(direct) == "1", timeout=60, what="the app on its own port")

    # Rolling is refused while the app publishes its port: a second container cannot bind it.
    refused = env.cli("deploy", "--env", "adopt", "--image", tiny["2"], "--strategy", "rolling")
    assert refused.exit_code == 2, refused.output
    error = json.loads(refused.stdout)["error"]
    assert "publishes host port" in error["message"] and "proxy start" in error["hint"]

    # 1. The proxy beside the app, on a port of its own: the app's port keeps answering.
    started, samples = under_load(direct, lambda: env.cli("proxy", "start", "--env", "adopt"))
    assert started.exit_code == 0, started.output
    assert failures(samples) == []
    status = json.loads(started.stdout)["result"]
    assert status["kind"] == "own" and status["started"] is True
    assert status["published"] == f"127.0.0.1:{env.proxy_port}"
    assert status["app_port"] == 8000 and "/healthz" in status["health"]
    assert env.version() == "1" and env.version(direct) == "1"
    again = env.cli("proxy", "start", "--env", "adopt")
    assert json.loads(again.stdout)["result"]["started"] is False

    # 2. The traffic has moved to the proxy's port; the app's `ports` become `expose`.
    compose = env.dir / "compose.yml"
    compose.write_text(compose.read_text().replace(f'ports: ["{direct}:8000"]', 'expose: ["8000"]'))

    # 3. A rolling deploy puts a container without a published port behind the proxy.
    deployed, samples = under_load(
        env.proxy_port,
        lambda: env.cli("deploy", "--env", "adopt", "--image", tiny["2"], "--strategy", "rolling"),
    )
    assert deployed.exit_code == 0, deployed.output
    assert failures(samples) == []
    assert env.version() == "2"
    (app,) = env.containers("web")
    assert not app.attrs["HostConfig"].get("PortBindings")
    # The old container is gone, and its port with it.
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{direct}/", timeout=2)


def test_the_previous_release_counts_as_started_on_its_own_health_route(
    tiny_env: TinyEnv, tiny: dict[str, str]
) -> None:
    """validate --previous-image's compatibility run waits for the configured health answer
    (here /healthz answering 200, from the Compose file), not for /health."""
    from deploytools import proxy_settings
    from deploytools.checks import compat
    from deploytools.config import load_config
    from deploytools.target import Target

    env = tiny_env
    deployed = env.cli("deploy", "--env", "own", "--image", tiny["2"], "--strategy", "rolling")
    assert deployed.exit_code == 0, deployed.output
    config = load_config(env.config)
    target = Target.for_environment(config, "own")
    settings = proxy_settings.resolve(config, config.environment("own"))
    assert (settings.app_port, settings.health.path) == (8000, "/healthz")
    with compat.previous_app(
        target, "web", tiny["1"], timeout_s=30, health=settings.health, port=settings.app_port
    ) as previous:
        assert requests.get(f"{previous.url}/", timeout=5).text == "1"
    assert env.version() == "2"
