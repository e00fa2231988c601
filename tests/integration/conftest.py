"""Fixtures of the integration tier (tests/conftest.py has the session fixtures it shares with
the end-to-end tier: the engine, the release repository and images, the PostgreSQL image).

    dtdep_stack     -> SharedStack: one stack (migrated, an admin) that the modules of the
                           reference service, checks, deploy, rollback, backup ... take turns on,
                           reset between them to 1.15.1 or 1.15.2 as first set up
                           (tests/helpers/shared_stack.py)
    image_variants  -> ImageVariants: image_variants.build(base, tag, ...) builds a tiny variant
                           of a release image once per session
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.helpers.shared_stack import ImageVariants, SharedStack
from tests.helpers.stacks import RELEASES, ReleaseImages


@pytest.fixture(scope="session")
def dtdep_stack(
    docker_client: docker.DockerClient, postgres_image: str, release_images: ReleaseImages
) -> Iterator[SharedStack]:
    images = {version: release_images[version] for version in RELEASES}
    shared = SharedStack(docker_client, postgres_image, images)
    try:
        yield shared.start()
    finally:
        shared.remove()


@pytest.fixture(scope="session")
def image_variants(docker_client: docker.DockerClient) -> Iterator[ImageVariants]:
    variants = ImageVariants(docker_client)
    yield variants
    variants.remove()
