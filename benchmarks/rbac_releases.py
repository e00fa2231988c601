"""The rbac-api release images the rolling and rollback benchmarks deploy, and their clean-up.

Imported by benchmarks/rolling_bench.py and benchmarks/rollback_bench.py (run as scripts:
benchmarks/ is on sys.path, and they put the repository root there for tests/helpers).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import docker

from tests.helpers.shared_stack import _remove_tags, build_variant
from tests.helpers.stacks import ReleaseImages, ReleaseRepo

ROOT = Path(__file__).resolve().parents[1]
V1 = "rbac-api-test:1.15.1"
V2 = "rbac-api-test:1.15.2"


def release_images(client: Any, tmp: Path, prefix: str) -> str:
    """Build 1.15.1 and 1.15.2 from a release repository in `tmp` (unless the engine has
    them), and 1.15.2 labelled expand-only, tagged `rbac-api-test:<prefix>1.15.2`; that tag."""
    repo_path = tmp / "rbac-api"
    subprocess.run(
        [str(ROOT / "examples/rbac-api/make-release-repo"), str(repo_path)],
        check=True,
        capture_output=True,
    )
    releases = ReleaseImages(client, ReleaseRepo(repo_path, Path(f"{repo_path}.origin.git")))
    for version, tag in (("1.15.1", V1), ("1.15.2", V2)):
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            releases[version]
    return build_variant(
        client,
        V2,
        f"rbac-api-test:{prefix}1.15.2",
        dockerfile='LABEL deploytools.migrations.expand-only="true"\n',
        files={},
    )


def remove_bench_tags(client: Any, prefix: str) -> None:
    """Untag the images the benchmark built (`prefix`) and the keep tags its deploys added."""
    _remove_tags(client, (prefix, "prod-release-"))
