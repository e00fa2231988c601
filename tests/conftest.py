"""The suite's tiers, and the fixtures its Docker tiers share.

Tiers are pytest markers given by a test's directory (tests/helpers/tiers.py): tests/unit ->
`unit`, tests/integration -> `integration`, tests/e2e -> `e2e`; anywhere else `unit`. A plain
`pytest` selects the unit tier (`-m unit` in pyproject.toml's addopts); `-m integration`,
`-m e2e` or an expression select others, and scripts/test names every tier. A new tier is a
directory, an entry in tiers.py's TIERS, a marker in pyproject.toml and a name in scripts/test.

Session fixtures of the integration and end-to-end tiers (real engine, real PostgreSQL):

    docker_client   -> docker.DockerClient on the local engine
    release_repo    -> ReleaseRepo: git repo of rbac-api, tags v1.15.1 and v1.15.2, with origin
    postgres_image  -> str: PostgreSQL image for stacks (built from tests/infra/postgres if absent)
    release_images  -> ReleaseImages: release_images["1.15.1"] builds rbac-api-test:1.15.1 once
                       per session (from `git archive` of the tag) and returns its name

When a test that used a ComposeStack (directly, or as an attribute of a fixture's value) fails,
the stack's container logs are attached to its report.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.helpers.stacks import (
    POSTGRES_IMAGE,
    POSTGRES_INFRA_DIR,
    PROXY_IMAGE,
    PROXY_INFRA_DIR,
    SERVICE_DIR,
    ComposeStack,
    ReleaseImages,
    ReleaseRepo,
    build_image,
)
from tests.helpers.tiers import tier_of

# Every Compose call of the suite (stacks here, deploytools' own) takes the proxy image from the
# environment: haproxy:2.8, the Compose file's default, cannot be pulled on every machine.
os.environ.setdefault("PROXY_IMAGE", PROXY_IMAGE)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its directory's tier."""
    for item in items:
        tier = tier_of(Path(item.path))
        if item.get_closest_marker(tier) is None:
            item.add_marker(getattr(pytest.mark, tier))


def pytest_report_header(config: pytest.Config) -> str:
    chosen = config.getoption("markexpr") or "(none)"
    return f"tiers: -m {chosen!r} (plain pytest: unit; scripts/test: every tier)"


# ---- the Docker tiers' session fixtures ---------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(version="auto", timeout=600)
    yield client
    client.close()


@pytest.fixture(scope="session")
def release_repo(tmp_path_factory: pytest.TempPathFactory) -> ReleaseRepo:
    path = tmp_path_factory.mktemp("releases") / "rbac-api"
    subprocess.run(
        [str(SERVICE_DIR / "make-release-repo"), str(path)], check=True, capture_output=True
    )
    return ReleaseRepo(path=path, origin=Path(f"{path}.origin.git"))


@pytest.fixture(scope="session")
def postgres_image(docker_client: docker.DockerClient) -> str:
    """POSTGRES_IMAGE (default deploytools-test/postgres:15); built here if bootstrap did not."""
    try:
        docker_client.images.get(POSTGRES_IMAGE)
    except docker.errors.ImageNotFound:
        build_image(docker_client, path=POSTGRES_INFRA_DIR, tag=POSTGRES_IMAGE)
    try:  # every stack has the proxy too
        docker_client.images.get(PROXY_IMAGE)
    except docker.errors.ImageNotFound:
        build_image(docker_client, path=PROXY_INFRA_DIR, tag=PROXY_IMAGE)
    return POSTGRES_IMAGE


@pytest.fixture(scope="session")
def release_images(docker_client: docker.DockerClient, release_repo: ReleaseRepo) -> ReleaseImages:
    return ReleaseImages(docker_client, release_repo)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Attach the container logs of every stack a failing test used to its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for value in getattr(item, "funcargs", {}).values():
            stacks = (
                [value]
                if isinstance(value, ComposeStack)
                else [
                    v
                    for v in getattr(value, "__dict__", {}).values()
                    if isinstance(v, ComposeStack)
                ]
            )
            for stack in stacks:
                report.sections.append((f"container logs: {stack.project}", stack.logs()))
