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
    notes_repo      -> Path: git repo of notes-api (the second reference service), tags v2.3.0
                       and v2.4.0, with origin
    notes_images    -> dict: version -> image ID of notes-api 2.3.0 and 2.4.0, built once per
                       session by `deploytools image build` (dtnotes/notes-api:VERSION, lint
                       labels included) and removed at its end (tests/helpers/notes_env.py)

When a test that used a ComposeStack (directly, or as an attribute of a fixture's value) fails,
the stack's container logs are attached to its report.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.helpers import notes_env
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
from tests.helpers.tiers import runs_last, tier_of

# Every Compose call of the suite (stacks here, deploytools' own) takes the proxy image from the
# environment: haproxy:2.8, the Compose file's default, cannot be pulled on every machine.
os.environ.setdefault("PROXY_IMAGE", PROXY_IMAGE)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its directory's tier; the tiers of LAST_TIERS go last."""
    for item in items:
        tier = tier_of(Path(item.path))
        if item.get_closest_marker(tier) is None:
            item.add_marker(getattr(pytest.mark, tier))
    items.sort(key=lambda item: runs_last(Path(item.path)))  # stable: the rest keep their order


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


@pytest.fixture(scope="session")
def notes_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return notes_env.make_release_repo(tmp_path_factory.mktemp("dtnotes-releases") / "notes-api")


@pytest.fixture(scope="session")
def notes_images(
    docker_client: docker.DockerClient,
    postgres_image: str,
    notes_repo: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """Both notes-api releases, built once for the integration module that releases them and
    the end-to-end pipeline that builds 2.4.0 again (from the engine's build cache then)."""
    tmp = tmp_path_factory.mktemp("dtnotes-build")
    project = f"dtnotes-build-{os.getpid()}"
    config = tmp / "deploy.toml"
    environment = notes_env.NotesEnvironment("production", project, notes_env.free_port())
    notes_env.write_config(
        config, [environment], postgres_image=postgres_image, store_volume=f"{project}-backups"
    )
    try:
        # The secrets set, as for a release: the baseline of 2.3.0's lint (a first release) is
        # read from that environment's database, which does not exist here.
        yield notes_env.build_images(config, notes_repo, notes_env.secret_values(secrets.token_hex))
    finally:
        notes_env.remove_images(docker_client)


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
