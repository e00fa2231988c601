"""`image build` and `image verify` on the real engine.

One image is built for the module (v1.15.1 of the session's release repository; the base and
package layers come from the engine's cache) under a repository name of its own on an
unreachable registry (127.0.0.1:9), so that `--push` fails the way a dead registry does. The
other builds in this module are of the same tag and come wholly from the cache.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest
from click.testing import CliRunner, Result

from deploytools.cli import cli

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "deploy.toml"
OCI = "org.opencontainers.image."


@dataclass(frozen=True)
class Built:
    repository: str
    reference: str
    config: Path
    result: Result


def _config(tmp: Path, repository: str) -> Path:
    text = CONFIG.read_text(encoding="utf-8")
    text = text.replace(
        'image_repository = "ghcr.io/example/rbac-api"', f'image_repository = "{repository}"'
    )
    text = text.replace('compose_files = ["', f'compose_files = ["{REPO_ROOT}/')
    path = tmp / "deploy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def deploytools(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


@pytest.fixture(scope="module")
def built(
    release_repo,  # type: ignore[no-untyped-def]
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Built]:
    repository = f"127.0.0.1:9/dtrel-rbac-api-{secrets.token_hex(4)}"
    config = _config(tmp_path_factory.mktemp("dtrel-image"), repository)
    result = deploytools(
        config, "image", "build", "--tag", "v1.15.1", "--repo", str(release_repo.path)
    )
    try:
        yield Built(repository, f"{repository}:1.15.1", config, result)
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(f"{repository}:1.15.1", force=True)


def test_build_prints_the_reference_with_the_image_id(
    built: Built,
    docker_client: docker.DockerClient,
    release_repo,  # type: ignore[no-untyped-def]
) -> None:
    assert built.result.exit_code == 0, built.result.output
    image = docker_client.images.get(built.reference)
    assert built.result.stdout.strip() == f"{built.reference}@{image.id}"
    # the build's own output streams through progress, on stderr
    assert "Step 1/" in built.result.stderr
    assert f"Successfully tagged {built.reference}" in built.result.stderr
    assert image.labels[OCI + "version"] == "1.15.1"
    assert image.labels[OCI + "revision"] == release_repo.commit("v1.15.1")
    assert image.labels[OCI + "created"] == release_repo.commit_date("v1.15.1")
    assert image.labels[OCI + "source"] == "https://github.com/example/rbac-api"


def test_the_context_is_the_tag_limited_by_dockerignore(
    built: Built, docker_client: docker.DockerClient
) -> None:
    listing = docker_client.containers.run(
        built.reference,
        ["sh", "-c", "ls -A /app; cat /app/VERSION"],
        name=f"dtrel-ls-{secrets.token_hex(4)}",
        remove=True,
        network_disabled=True,
    ).decode()
    files = listing.split()
    assert "rbac_api" in files
    assert "migrations" in files
    # .dockerignore keeps these out
    for ignored in ("README.md", "Dockerfile", ".dockerignore", ".git"):
        assert ignored not in files
    # the release repository's work tree is at v1.15.2: the image has the tag's files
    assert files[-1] == "1.15.1"
    assert "RELEASE_NOTES_v1.15.2.md" not in files


def test_a_second_build_of_the_tag_is_the_same_image(
    built: Built,
    docker_client: docker.DockerClient,
    release_repo,  # type: ignore[no-untyped-def]
) -> None:
    again = deploytools(
        built.config,
        "--json",
        "image",
        "build",
        "--tag",
        "v1.15.1",
        "--repo",
        str(release_repo.path),
    )
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)["result"]
    image = docker_client.images.get(built.reference)
    assert data["image_id"] == image.id
    assert data["pinned"] == f"{built.reference}@{image.id}"
    assert data["pushed"] is False
    assert data["labels"][OCI + "version"] == "1.15.1"


def test_push_to_an_unreachable_registry_says_so(
    built: Built,
    release_repo,  # type: ignore[no-untyped-def]
) -> None:
    result = deploytools(
        built.config,
        "image",
        "build",
        "--tag",
        "v1.15.1",
        "--repo",
        str(release_repo.path),
        "--push",
    )
    assert result.exit_code == 3
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: cannot push {built.reference} to registry 127.0.0.1:9")
    assert "nothing was pushed" in error


def test_verify_passes_for_the_release_image(
    built: Built,
    docker_client: docker.DockerClient,
    release_repo,  # type: ignore[no-untyped-def]
) -> None:
    image = docker_client.images.get(built.reference)
    result = deploytools(
        built.config,
        "image",
        "verify",
        built.reference,
        "--env",
        "staging",
        "--expect-version",
        "1.15.1",
        "--expect-digest",
        image.id,
        "--expect-revision",
        release_repo.commit("v1.15.1"),
    )
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["passed", "image-exists:"],
        ["passed", "image-labels:"],
        ["passed", "image-revision:"],
        ["passed", "image-digest:"],
    ]


@pytest.mark.parametrize(
    ("options", "failing"),
    [
        (["--expect-version", "1.15.2"], "image-labels"),
        (["--expect-version", "1.15.1", "--expect-digest", "sha256:" + "0" * 64], "image-digest"),
        (["--expect-version", "1.15.1", "--expect-revision", "0" * 40], "image-revision"),
    ],
)
def test_verify_names_the_check_that_fails(built: Built, options: list[str], failing: str) -> None:
    result = deploytools(built.config, "--json", "image", "verify", built.reference, *options)
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    checks = data["error"]["facts"]["report"]["checks"]
    failed = [c["name"] for c in checks if c["verdict"] == "failed"]
    assert failed == [failing]


def test_verify_an_image_that_is_not_there(built: Built) -> None:
    result = deploytools(
        built.config, "image", "verify", f"{built.repository}:0.0.1", "--expect-version", "0.0.1"
    )
    assert result.exit_code == 1
    assert "failed  image-exists" in result.stdout


@pytest.mark.parametrize("tag", ["v1.15", "1.15.2", "v1.15.2; rm -rf /", "v9.9.9"])
def test_build_refuses_bad_tags_and_builds_nothing(
    built: Built,
    docker_client: docker.DockerClient,
    release_repo,  # type: ignore[no-untyped-def]
    tag: str,
) -> None:
    before = {i.id for i in docker_client.images.list(name=built.repository)}
    result = deploytools(
        built.config, "image", "build", "--tag", tag, "--repo", str(release_repo.path)
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "Step 1/" not in result.stderr
    assert {i.id for i in docker_client.images.list(name=built.repository)} == before


def test_build_refuses_a_path_that_is_not_a_repository(built: Built, tmp_path: Path) -> None:
    result = deploytools(
        built.config, "image", "build", "--tag", "v1.15.1", "--repo", str(tmp_path)
    )
    assert result.exit_code == 2
    assert "is not a git repository" in result.stderr


@pytest.mark.parametrize("version", ["1.15", "v1.15.1", "1.15.1; true"])
def test_verify_refuses_a_malformed_expected_version(built: Built, version: str) -> None:
    result = deploytools(
        built.config, "image", "verify", built.reference, "--expect-version", version
    )
    assert result.exit_code == 2
    assert "is not a version: expected X.Y.Z" in result.stderr
