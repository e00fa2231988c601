"""The suite's Docker helpers: the release repository, the release images and Compose stacks of
docker-compose.prod.yml on the local engine. The integration and end-to-end tiers reach them
through the fixtures of tests/conftest.py; the benchmarks import them directly.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import requests

if TYPE_CHECKING:
    from deploytools.proxy import ServerState

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = REPO_ROOT / "examples" / "rbac-api"
COMPOSE_FILE = REPO_ROOT / "docker-compose.prod.yml"
POSTGRES_INFRA_DIR = REPO_ROOT / "tests" / "infra" / "postgres"
POSTGRES_IMAGE = os.environ.get("POSTGRES_IMAGE", "deploytools-test/postgres:15")
PROXY_INFRA_DIR = REPO_ROOT / "tests" / "infra" / "haproxy"
PROXY_IMAGE = os.environ.get("PROXY_IMAGE", "deploytools-test/haproxy:bookworm")
RELEASES = ("1.15.1", "1.15.2")
TEST_IMAGE_REPOSITORY = "rbac-api-test"
IMAGE_SOURCE = "https://github.com/example/rbac-api"


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) when it answers, else `docker-compose` (v1)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("neither `docker compose` nor `docker-compose` is installed")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.25):
    """Poll predicate() until it returns a truthy value; back off to 0.5 s; fail after timeout.
    (Polls are cheap engine calls; a longer step is time every test waits for nothing.)"""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for {what}"
                + (f" (last error: {last_error})" if last_error else "")
            )
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def remove_project_leftovers(client, project: str, volume_prefixes: tuple[str, ...]) -> None:
    """What a Compose project leaves after its `down`: containers named after it (deploytools'
    own proxy and store helpers are no Compose services), volumes whose names start with one of
    `volume_prefixes`, and its networks (`down` cannot remove one while such a container is
    attached; left behind, they use up the engine's address pools after a few runs)."""
    for container in client.containers.list(all=True, filters={"name": project}):
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)
    for volume in client.volumes.list():
        if volume.name.startswith(volume_prefixes):
            with contextlib.suppress(Exception):
                volume.remove(force=True)
    for network in client.networks.list(filters={"label": f"com.docker.compose.project={project}"}):
        with contextlib.suppress(Exception):
            network.remove()


# ---- release repository ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseRepo:
    path: Path
    origin: Path

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    def commit(self, tag: str) -> str:
        return self.git("rev-parse", f"{tag}^{{commit}}")

    def commit_date(self, tag: str) -> str:
        return self.git("log", "-1", "--format=%cI", tag)

    def archive(self, tag: str) -> bytes:
        """The tag's tree as a tar stream: a docker build context."""
        return subprocess.run(
            ["git", "-C", str(self.path), "archive", "--format=tar", tag],
            check=True,
            capture_output=True,
        ).stdout


# ---- images --------------------------------------------------------------------------------------


def build_image(
    client: docker.DockerClient,
    *,
    context_tar: bytes | None = None,
    path: Path | None = None,
    tag: str,
    buildargs: dict[str, str] | None = None,
) -> str:
    """Build with the engine's builder; raise with the build log's tail on failure."""
    kwargs = (
        {"fileobj": io.BytesIO(context_tar), "custom_context": True}
        if context_tar is not None
        else {"path": str(path)}
    )
    log: list[str] = []
    for chunk in client.api.build(
        tag=tag, buildargs=buildargs or {}, rm=True, forcerm=True, decode=True, **kwargs
    ):
        if "stream" in chunk:
            log.append(chunk["stream"])
        if "error" in chunk:
            raise RuntimeError(
                f"docker build of {tag} failed: {chunk['error']}\n" + "".join(log[-40:])
            )
    return tag


class ReleaseImages:
    """release_images["1.15.1"] -> "rbac-api-test:1.15.1", built from the tag once per session."""

    def __init__(self, client: docker.DockerClient, repo: ReleaseRepo) -> None:
        self._client, self._repo, self._built = client, repo, {}

    def build_args(self, version: str) -> dict[str, str]:
        tag = f"v{version}"
        return {
            "VERSION": version,
            "REVISION": self._repo.commit(tag),
            "CREATED": self._repo.commit_date(tag),
            "SOURCE": IMAGE_SOURCE,
        }

    def __getitem__(self, version: str) -> str:
        if version not in self._built:
            name = f"{TEST_IMAGE_REPOSITORY}:{version}"
            build_image(
                self._client,
                context_tar=self._repo.archive(f"v{version}"),
                tag=name,
                buildargs=self.build_args(version),
            )
            self._built[version] = name
        return self._built[version]


# ---- Compose stacks ------------------------------------------------------------------------------


def proxy_servers(stack: ComposeStack) -> dict[str, ServerState]:
    """The servers of the stack's proxy service, read on its runtime API."""
    from deploytools import proxy
    from deploytools.engine import Container

    (gateway,) = stack.client.containers.list(
        filters={
            "label": [
                f"com.docker.compose.project={stack.project}",
                "com.docker.compose.service=proxy",
            ]
        }
    )
    session = proxy.RuntimeApi(Container(gateway))
    try:
        return proxy.read_servers(session)
    finally:
        session.close()


@dataclass
class ComposeStack:
    """One docker-compose.prod.yml project on the local engine."""

    project: str
    env: dict[str, str]
    client: docker.DockerClient
    compose: list[str] = field(default_factory=compose_command)
    admin: tuple[str, str] | None = None

    @property
    def app_port(self) -> int:
        return int(self.env["APP_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    def run_compose(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.compose, "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        result = subprocess.run(
            argv,
            env={**os.environ, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def up(self, *services: str, env: dict[str, str] | None = None) -> None:
        if env:
            self.env.update(env)
        self.run_compose("up", "-d", *services)
        self.wait_healthy("db")
        self.wait_healthy("app")
        self.wait_healthy("proxy")

    def down(self) -> None:
        self.run_compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False)

    def container(self, service: str):
        found = self.client.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={service}",
                    "com.docker.compose.oneoff=False",
                ]
            },
        )
        if not found:
            raise LookupError(f"no {service} container in project {self.project}")
        return found[0]

    def is_healthy(self, service: str) -> bool:
        """Whether `service` runs and its healthcheck passes; raises once it exited."""
        try:
            container = self.container(service)
            container.reload()
        except (LookupError, docker.errors.APIError):
            return False
        if container.status == "exited":
            raise RuntimeError(f"{self.project}/{service} exited")
        return container.attrs["State"].get("Health", {}).get("Status") == "healthy"

    def responds(self) -> bool:
        """Whether the app answers /health through the proxy, on the published port."""
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait_healthy(
        self, service: str, timeout: float = 90, *, engine_status: bool = False
    ) -> None:
        """Until `service` serves: deploytools' own wait (`wait_until_healthy`), which runs the
        container's healthcheck while the engine still says "starting", so a test does not sit
        out the engine's next scheduled probe. `engine_status` waits for the engine's own
        "healthy" instead, for a test that asserts it."""
        if not engine_status:
            from deploytools.engine.client import Container as EngineContainer
            from deploytools.target import wait_until_healthy

            container = wait_until(
                lambda: self.container(service), timeout=timeout, what=f"{self.project}/{service}"
            )
            wait_until_healthy(EngineContainer(container), timeout_s=timeout)
            return

        def healthy() -> bool:
            container = self.container(service)
            container.reload()
            status = container.attrs["State"].get("Health", {}).get("Status")
            if container.status == "exited":
                raise RuntimeError(f"{service} exited")
            return status == "healthy"

        wait_until(healthy, timeout=timeout, what=f"{self.project}/{service} to be healthy")

    def run_one_off(
        self,
        *argv: str,
        container_env: dict[str, str] | None = None,
        compose_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`run --rm --no-deps app ARGV...`. container_env is passed by name (`-e KEY`), so values
        stay off the command line; compose_env only changes interpolation (e.g. APP_IMAGE)."""
        flags = [item for key in (container_env or {}) for item in ("-e", key)]
        return self.run_compose(
            "run",
            "--rm",
            "--no-deps",
            *flags,
            "app",
            *argv,
            env={**(compose_env or {}), **(container_env or {})},
        )

    def migrate(self, app_image: str | None = None) -> subprocess.CompletedProcess[str]:
        """alembic upgrade head in a one-off container of app_image (default: APP_IMAGE)."""
        return self.run_one_off(
            "alembic",
            "-c",
            "/app/alembic.ini",
            "upgrade",
            "head",
            compose_env={"APP_IMAGE": app_image} if app_image else None,
        )

    def create_admin(self, username: str = "admin") -> tuple[str, str]:
        password = secrets.token_urlsafe(18)
        self.run_one_off(
            "python3",
            "-m",
            "rbac_api.create_admin",
            container_env={"ADMIN_USERNAME": username, "ADMIN_PASSWORD": password},
        )
        self.admin = (username, password)
        return self.admin

    def psql(self, sql: str) -> str:
        """Run SQL in the db container as the database owner; return tuples-only output."""
        code, output = self.container("db").exec_run(
            [
                "psql",
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-A",
                "-t",
                "-U",
                self.env["POSTGRES_USER"],
                "-d",
                self.env["POSTGRES_DB"],
                "-c",
                sql,
            ]
        )
        text = output.decode("utf-8", "replace").strip()
        if code != 0:
            raise RuntimeError(f"psql failed ({code}): {text}")
        return text

    def table_row_counts(self) -> dict[str, int]:
        tables = self.psql(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        ).split()
        # Table names come from the catalog, not from input.
        count = 'SELECT count(*) FROM "{}"'
        return {table: int(self.psql(count.format(table))) for table in tables}

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", timeout=5).json()

    def logs(self, tail: int = 200) -> str:
        result = self.run_compose(
            "logs", "--no-color", "--tail", str(tail), check=False, timeout=60
        )
        return result.stdout + result.stderr
