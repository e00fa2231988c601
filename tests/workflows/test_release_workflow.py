"""release.yml, run by act on a pushed tag (part of scenario (a)): verify-release.

The checkout stand-in behaves as the pinned actions/checkout v4.2.2 does with fetch-depth 0
on a tag: it stores the bare commit under the tag's name (actions/checkout#882), so without
the job's own fetch of the tag `release verify` fails tag-annotated on every release; and a
report written into the work tree (`| tee release-verify.json`) fails work-tree-clean. The
job fetches the tag object itself and writes to $RUNNER_TEMP: both checks pass.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakes.github_server import FakeGitHub
from tests.workflows.conftest import REPOSITORY, Act


def test_verify_release_passes_on_a_pushed_annotated_tag(
    act: Act, github: FakeGitHub, tmp_path: Path
) -> None:
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
        job="verify-release",
        artifacts=artifacts,
    )
    assert run.returncode == 0, run.log[-6000:]
    assert run.jobs() == {"verify release": "succeeded"}, run.log[-6000:]
    report = json.loads((artifacts / "release-verify" / "release-verify.json").read_text())
    verdicts = {c["name"]: c["verdict"] for c in report["result"]["checks"]}
    assert verdicts["tag-annotated"] == "passed", verdicts
    assert verdicts["work-tree-clean"] == "passed", verdicts
    assert verdicts["github-production-environment"] == "passed", verdicts
    # the GitHub checks went to the fake, with the job's token
    assert f"/repos/{REPOSITORY}/environments/production-deploy" in github.paths()
