"""release.yml, run by act on a pushed tag (part of scenario (a)): verify-release.

The checkout stand-in behaves as the pinned actions/checkout v4.2.2 does with fetch-depth 0
on a tag: it stores the bare commit under the tag's name (actions/checkout#882), so without
the job's own fetch of the tag `release verify` fails tag-annotated on every release; and a
report written into the work tree (`| tee release-verify.json`) fails work-tree-clean. The
job fetches the tag object itself and writes to $RUNNER_TEMP: both checks pass.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.fakes.github_server import FakeGitHub
from tests.workflows.conftest import REPOSITORY, Act

pytestmark = pytest.mark.workflows


def test_a_pushed_tag_is_verified_then_built_and_pushed_by_digest(
    act: Act, github: FakeGitHub, registry: str, tmp_path: Path
) -> None:
    """(a), its first two jobs (act runs build-image's needs first).

    verify-release: tag-annotated and work-tree-clean pass (with release.yml as it was, both
    failed on every release). build-image: the job's `image` output is repository@digest of
    the manifest the registry holds, pulled by digest and verified before anything uses it."""
    tag = "v1.15.1"  # examples/rbac-api/VERSION, with its release notes
    commit = act.git_server.tag(tag, "rbac-api 1.15.1")
    github.protected_repository(REPOSITORY, sha=commit)
    payload = tmp_path / "push.json"
    payload.write_text(
        json.dumps(
            {
                "ref": f"refs/tags/{tag}",
                "after": commit,
                "repository": {"full_name": REPOSITORY, "default_branch": "main"},
            }
        )
    )
    artifacts = tmp_path / "artifacts"
    run = act.run(
        "push",
        "release.yml",
        payload=payload,
        github_api=github.url,
        job="build-image",
        artifacts=artifacts,
    )
    assert run.returncode == 0, run.log[-6000:]
    assert run.jobs() == {"verify release": "succeeded", "build image": "succeeded"}, run.log[
        -6000:
    ]
    report = json.loads((artifacts / "release-verify" / "release-verify.json").read_text())
    verdicts = {c["name"]: c["verdict"] for c in report["result"]["checks"]}
    assert verdicts["tag-annotated"] == "passed", verdicts
    assert verdicts["work-tree-clean"] == "passed", verdicts
    assert verdicts["github-production-environment"] == "passed", verdicts
    # the GitHub checks went to the fake, production-deploy's rule among them
    assert f"/repos/{REPOSITORY}/environments/production-deploy" in github.paths()

    outputs = dict(re.findall(r"::set-output:: (image|digest)=(\S+)", run.log))
    repository = f"{registry}/example/rbac-api"
    assert outputs["image"] == f"{repository}@{outputs['digest']}", outputs
    # The registry's own digest of the pushed manifest (distribution's API): the same.
    tags = json.load(urllib.request.urlopen(f"http://{registry}/v2/example/rbac-api/tags/list"))
    request = urllib.request.Request(
        f"http://{registry}/v2/example/rbac-api/manifests/{tags['tags'][0]}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request) as answer:  # noqa: S310
        assert answer.headers["Docker-Content-Digest"] == outputs["digest"]
    # Pulled again by digest here (the job pulled it before `image verify`): the release's.
    subprocess.run(["docker", "pull", "-q", outputs["image"]], check=True, capture_output=True)
    inspect = ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}"]
    found = subprocess.run([*inspect, outputs["image"]], check=True, capture_output=True, text=True)
    labels = json.loads(found.stdout)
    assert labels["org.opencontainers.image.version"] == "1.15.1"
    assert labels["org.opencontainers.image.revision"] == commit
    for step in ("pull the pushed manifest by its digest", "verify the image (labels, version"):
        assert f"Success - Main {step}" in run.log, step
