"""`image verify --env production --tested-in staging` on the real engine: staging's release
records, read from a real backup store (a named volume, through the helper container), decide
which image ID production may run.

Both environments are the local engine (so one engine holds both stores' volume); the images are
the session's rbac-api-test:1.15.1/1.15.2. Docker names carry the prefix dtgap4-; the store
volume is removed at the end, failures included.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from click.testing import CliRunner, Result

from deploytools.cli import cli
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.session import open_environment
from deploytools.store.records import ReleaseRecord, utc_now
from tests.helpers.shared_stack import _remove_volume

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The repository's deploy.toml on dtgap4- projects and a store volume of its own."""
    volume = f"dtgap4-store-{secrets.token_hex(3)}"
    text = (REPO_ROOT / "deploy.toml").read_text()
    text = text.replace('compose_project = "rbac-staging"', 'compose_project = "dtgap4-staging"')
    text = text.replace(
        'compose_project = "rbac-production"', 'compose_project = "dtgap4-production"'
    )
    text = re.sub(r'^store = ".*"$', f'store = "volume:{volume}"', text, flags=re.M)
    compose = str(REPO_ROOT / "docker-compose.prod.yml")
    text = text.replace('["docker-compose.prod.yml"]', f'["{compose}"]')
    path = tmp_path_factory.mktemp("dtgap4") / "deploy.toml"
    path.write_text(text)
    yield path
    client = docker.from_env()
    try:
        _remove_volume(client, volume)  # with the store's kept helper, which mounts it
    finally:
        client.close()


def record_staging_deploy(config: Path, image: str, image_id: str) -> None:
    """A succeeded deploy of 1.15.2 in staging's history, as deploy writes it."""
    ctx = StepContext(config=load_config(config))
    with open_environment(ctx, "staging") as session:
        history = session.history
        history.save_release(
            ReleaseRecord(
                id=history.next_release_id(),
                environment="staging",
                kind="deploy",
                who="test",
                started=utc_now(),
                image=image,
                image_id=image_id,
                version="1.15.2",
                outcome="succeeded",
                finished=utc_now(),
            )
        )


def verify(config: Path, image: str) -> Result:
    args = ["image", "verify", image, "--expect-version", "1.15.2"]
    args += ["--env", "production", "--tested-in", "staging"]
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def image_tested_line(result: Result) -> str:
    return next(line for line in result.output.splitlines() if "image-tested" in line)


def test_production_runs_only_the_image_staging_recorded(
    config_file: Path,
    release_images,  # type: ignore[no-untyped-def]
    docker_client: docker.DockerClient,
) -> None:
    image = release_images["1.15.2"]
    image_id = docker_client.images.get(image).id
    other_id = docker_client.images.get(release_images["1.15.1"]).id

    # Nothing of 1.15.2 in staging's history yet: it never passed staging.
    never = verify(config_file, image)
    assert never.exit_code == 1, never.output
    assert image_tested_line(never).startswith("failed")
    assert "never deployed to staging" in image_tested_line(never)

    # Staging ran another build under the same version: production's image is not that one.
    record_staging_deploy(config_file, image, other_id)
    different = verify(config_file, image)
    assert different.exit_code == 1, different.output
    line = image_tested_line(different)
    assert line.startswith("failed") and image_id in line and other_id in line
    # Only that check failed: the labels are the release's.
    assert [x for x in different.output.splitlines() if x.startswith("failed")] == [line]

    # The newest succeeded deploy of 1.15.2 in staging ran exactly this image.
    record_staging_deploy(config_file, image, image_id)
    same = verify(config_file, image)
    assert same.exit_code == 0, same.output
    assert image_tested_line(same).startswith("passed") and image_id in image_tested_line(same)
