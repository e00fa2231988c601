"""Fixtures of the integration tier (tests/conftest.py has the session fixtures it shares with
the end-to-end tier: the engine, the release repository and images, the PostgreSQL image).

    dtdep_stack     -> SharedStack: one stack (migrated, an admin) that the modules of the
                           reference service, checks, deploy, rollback, backup ... take turns on,
                           reset between them to 1.15.1 or 1.15.2 as first set up
                           (tests/helpers/shared_stack.py)
    image_variants  -> ImageVariants: image_variants.build(base, tag, ...) builds a tiny variant
                           of a release image once per session

The shared stack's lifecycle is pytest-docker's: its fixtures below name the Compose file, the
project (`dtdep-shared-PID`) and the Compose command (v1 or v2, with the stack's variables in an
env file); `docker_services` runs `down -v` then `up -d db` before the first module and
`down -v` after the last. The stack is set up on top of that (migrated, an admin, a template
of each release's database), waiting with docker_services.wait_until_responsive.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import docker
import pytest
from pytest_docker import Services

from tests.helpers.shared_stack import ImageVariants, SharedStack
from tests.helpers.stacks import COMPOSE_FILE, RELEASES, ReleaseImages, compose_command

#: `down -v` before `up`: a stack left by an interrupted run under this name cannot leak in.
DOWN = "down -v --remove-orphans --timeout 5"


@pytest.fixture(scope="session")
def shared_stack(
    docker_client: docker.DockerClient, postgres_image: str, release_images: ReleaseImages
) -> SharedStack:
    """The shared stack as planned (project name, ports, passwords, images), not started; the
    leftovers of earlier runs whose process is gone are removed here."""
    images = {version: release_images[version] for version in RELEASES}
    return SharedStack(docker_client, postgres_image, images)


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name(shared_stack: SharedStack) -> str:
    return shared_stack.stack.project


@pytest.fixture(scope="session")
def docker_compose_command(
    shared_stack: SharedStack, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """`docker compose` (v2) or `docker-compose` (v1, Debian 12's), with the stack's variables
    (the file requires POSTGRES_PASSWORD and APP_SECRET_KEY, for `down` too). pytest-docker
    runs it through a shell: quoted."""
    env_file = shared_stack.env_file(tmp_path_factory.mktemp("dtdep-compose") / "stack.env")
    return shlex.join([*compose_command(), "--env-file", str(env_file)])


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return [DOWN, "up -d db"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return [DOWN]


@pytest.fixture(scope="session")
def dtdep_stack(shared_stack: SharedStack, docker_services: Services) -> Iterator[SharedStack]:
    try:
        yield shared_stack.start(docker_services.wait_until_responsive)
    finally:
        shared_stack.remove()


@pytest.fixture(scope="session")
def image_variants(docker_client: docker.DockerClient) -> Iterator[ImageVariants]:
    variants = ImageVariants(docker_client)
    yield variants
    variants.remove()
