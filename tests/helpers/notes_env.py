"""notes-api, the second reference service, for the Docker tiers: its release repository, its
two images (built once per session by `deploytools image build`: tests/conftest.py's
notes_repo and notes_images), a deploy.toml made from the example's own (this run's Compose
projects, ports, store and image repository; its [checks] as they are), and the removal of
what a stack of it leaves.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from deploytools.cli import cli
from tests.helpers.stacks import ComposeStack, remove_project_leftovers

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE = REPO_ROOT / "examples" / "notes-api"
COMPOSE_FILE = SERVICE / "docker-compose.yml"
#: The images of both releases, built once per session and removed at its end.
IMAGE_REPOSITORY = "dtnotes/notes-api"
TAGS = ("v2.3.0", "v2.4.0")
SUPERUSER = "root@notes.example.com"
#: Ports of the tests that came with the pipeline run on notes-api (`dtn3` projects).
PORTS = range(19300, 19400)


@dataclass(frozen=True)
class NotesEnvironment:
    """One environment of a deploy.toml for notes-api."""

    name: str
    project: str
    port: int
    requires_approval: bool = False


def free_port(ports: range = PORTS) -> int:
    """A port of `ports` nothing listens on (the proxy publishes it for the environment)."""
    candidates = list(ports)
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


def secret_values(token: Any) -> dict[str, str]:
    """The secrets of both environments and the checks' users (`token`: secrets.token_hex)."""
    return {
        "DB_PASSWORD": token(16),
        "SECRET_KEY": token(24),
        "FIRST_SUPERUSER_PASSWORD": token(12),
        # The checks' users: the superuser (the app's own), and a writer it creates; in
        # production under the secret names of its own the example gives it.
        "FIRST_SUPERUSER": SUPERUSER,
        "CHECK_WRITER_EMAIL": "writer@notes.example.com",
        "CHECK_WRITER_PASSWORD": token(12),
        "PROD_CHECK_WRITER_EMAIL": "writer@notes.example.com",
        "PROD_CHECK_WRITER_PASSWORD": token(12),
    }


def write_config(
    path: Path,
    environments: Sequence[NotesEnvironment],
    *,
    postgres_image: str,
    store_volume: str,
) -> None:
    """The example's deploy.toml with these environments, this store and image repository, no
    GitHub, generous thresholds and shorter load tests; its [image], [release] and [checks]
    as they are."""
    text = (SERVICE / "deploy.toml").read_text(encoding="utf-8")
    first = text.index("[environments.staging]")
    backups = text.index("[backups]")
    lines: list[str] = []
    for env in environments:
        lines += [
            f"[environments.{env.name}]",
            f'compose_project = "{env.project}"',
            f'base_url = "http://127.0.0.1:{env.port}"',
            f"requires_approval = {'true' if env.requires_approval else 'false'}",
            f'variables = {{ POSTGRES_IMAGE = "{postgres_image}", '
            f'FIRST_SUPERUSER = "{SUPERUSER}" }}',
            'secrets = ["DB_PASSWORD", "SECRET_KEY", "FIRST_SUPERUSER_PASSWORD"]',
            "",
        ]
    lines += ["[backups]", f'store = "volume:{store_volume}"', "", ""]
    rest = text[backups:].split("\n", 2)[2]  # without the example's [backups] store line
    text = text[:first] + "\n".join(lines) + rest
    text = text.replace('"ghcr.io/example/notes-api"', f'"{IMAGE_REPOSITORY}"')
    text = text.replace('["docker-compose.yml"]', f'["{COMPOSE_FILE}"]')
    text = text.replace('source_dir = "."\n', "")
    # No GitHub: a token in the runner's environment must not reach a real repository.
    text = text.replace('repository = "example/notes-api"', 'repository = ""')
    text = text.replace("[deploy]\n", "[deploy]\nhealth_timeout_s = 90.0\nlock_ttl_s = 600\n")
    # Shorter load tests, with more samples (a tighter range of the p95).
    text = text.replace(
        "rate_per_s = 20.0\nduration_s = 10.0\n", "rate_per_s = 40.0\nduration_s = 5.0\n"
    )
    assert "rate_per_s = 40.0" in text, "the example's [[checks.latency]] changed"
    # Generous: the engine is shared; latency is the benchmarks' business, not the tests'.
    text += "\n[thresholds]\nhealth_ms = 2000.0\napi_p95_ms = 2000.0\n"
    path.write_text(text, encoding="utf-8")


def make_release_repo(path: Path) -> Path:
    """The release repository: 2.3.0 and 2.4.0 tagged and pushed to its origin."""
    subprocess.run([str(SERVICE / "make-release-repo"), str(path)], check=True, capture_output=True)
    return path


def build_images(config: Path, repo: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Both releases built from their tags by `deploytools image build`: version -> image ID
    (by ID, as `pipeline run` hands an unpushed image on)."""
    images: dict[str, str] = {}
    for tag in TAGS:
        built = CliRunner().invoke(
            cli,
            ["--config", str(config), "--json", "image", "build", "--tag", tag, "--repo",
             str(repo)],
            env=dict(environ),
            catch_exceptions=False,
        )  # fmt: skip
        assert built.exit_code == 0, built.output
        images[tag[1:]] = json.loads(built.stdout)["result"]["image_id"]
    return images


def remove_images(client: Any, ids: Sequence[str] = (), repository: str = IMAGE_REPOSITORY) -> None:
    """Every tag of `repository`, and the images `ids` (untagged when a later build of the same
    tag took their tag)."""
    for image in client.images.list(name=repository):
        for tag in image.tags:
            with contextlib.suppress(Exception):
                client.images.remove(tag, force=True)
    for image_id in ids:
        with contextlib.suppress(Exception):
            client.images.remove(image_id, force=True)


def remove_project(client: Any, project: str, env: Mapping[str, str]) -> None:
    """Take a Compose project of notes-api down with its volumes, and whatever it left (its
    proxy container, `PROJECT-...` volumes)."""
    subprocess.run(
        [*ComposeStack(project=project, env={}, client=client).compose, "-f", str(COMPOSE_FILE),
         "-p", project, "down", "-v", "--timeout", "5"],
        env={**os.environ, **env},
        capture_output=True,
        check=False,
    )  # fmt: skip
    remove_project_leftovers(client, project, (f"{project}-", f"{project}_"))


def remove_volume(client: Any, name: str) -> None:
    with contextlib.suppress(Exception):
        client.volumes.get(name).remove(force=True)


def app_containers(client: Any, project: str, service: str = "api") -> list[Any]:
    return client.containers.list(  # type: ignore[no-any-return]
        filters={"label": [f"com.docker.compose.project={project}",
                           f"com.docker.compose.service={service}"]}
    )  # fmt: skip


def serving_versions(client: Any, project: str) -> list[str]:
    """The release version of each running app container of `project`."""
    return sorted(
        str(c.image.labels["org.opencontainers.image.version"])
        for c in app_containers(client, project)
    )


def psql(client: Any, project: str, query: str) -> str:
    [database] = app_containers(client, project, "postgres")
    code, output = database.exec_run(["psql", "-U", "notes", "-d", "notes", "-tAc", query])
    assert code == 0, output
    return str(output.decode().strip())


@contextlib.contextmanager
def removed_afterwards(
    client: Any, projects: Sequence[str], env: Mapping[str, str]
) -> Iterator[None]:
    """Remove the projects at the end, failures included (and before: a leftover of a killed
    run of this pid)."""
    for project in projects:
        remove_project(client, project, env)
    try:
        yield
    finally:
        for project in projects:
            remove_project(client, project, env)
