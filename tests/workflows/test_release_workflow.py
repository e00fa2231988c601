"""A pushed tag through release.yml: (a)'s first jobs, and (b) smoke failing on staging.

(a) verify-release: tag-annotated and work-tree-clean pass (with release.yml as it was, both
failed on every release: checkout's copy of the tag, the report tee'd into the work tree).
build-image: its `image` output is repository@digest of the manifest the registry holds,
pulled by digest and verified before anything uses it; staging deploys that digest.

(b) smoke fails on staging: production untouched, no production failure notice, the status
page untouched; the team is told it was staging.

The whole release.yml runs through act on a pushed tag: verify, build (pushed to the session's
registry), deploy to the session's staging stack (pulled by digest), then smoke fails there (the
check user's credentials are not the service's). Everything after it is skipped, and
notify-outcome reports a staging failure to Slack only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.fakes.github_server import FakeGitHub
from tests.fakes.webhook_server import FakeWebhooks
from tests.workflows.conftest import PREFIX, REPOSITORY, Act, ServiceImages

pytestmark = pytest.mark.workflows

SECRETS = {
    "POSTGRES_PASSWORD": "dtwf-postgres-password-1234",
    "APP_SECRET_KEY": "dtwf-app-secret-key-0123456789abcdef",
    # no such users in the service: smoke's logins fail
    "ADMIN_USERNAME": "dtwf-admin",
    "ADMIN_PASSWORD": "dtwf-not-the-admin-password",
    "CHECK_EDITOR_USERNAME": "dtwf-editor",
    "CHECK_EDITOR_PASSWORD": "dtwf-not-the-editor-password",
    "CHECK_VIEWER_USERNAME": "dtwf-viewer",
    "CHECK_VIEWER_PASSWORD": "dtwf-not-the-viewer-password",
}


@pytest.fixture
def staging(act: Act, service_image: ServiceImages) -> str:
    """Staging already serving a release (1.15.1), as before any release but the first:
    deploy's backup before the change needs the running database."""
    image = service_image("1.15.1")
    done = subprocess.run(
        [sys.executable, "-m", "deploytools", "--config", "deploy.toml", "deploy",
         "--env", "staging", "--image", image, "--no-backup-check"],
        cwd=act.git_server.work, env={**os.environ, **SECRETS},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return image


def test_a_pushed_tag_is_built_by_digest_and_a_staging_failure_stays_stagings(
    act: Act, github: FakeGitHub, registry: str, staging: str, tmp_path: Path
) -> None:
    tag = "v1.15.1"
    commit = act.git_server.tag(tag, "rbac-api 1.15.1")
    github.protected_repository(REPOSITORY, sha=commit)
    payload = tmp_path / "push.json"
    payload.write_text(json.dumps({"ref": f"refs/tags/{tag}", "after": commit}))
    artifacts = tmp_path / "artifacts"
    with FakeWebhooks() as hooks:
        run = act.run(
            "push",
            "release.yml",
            payload=payload,
            github_api=github.url,
            secrets={
                **SECRETS,
                "SLACK_WEBHOOK_URL": f"{hooks.url}/slack",
                "STATUS_PAGE_HOOK_URL": f"{hooks.url}/status",
            },
            artifacts=artifacts,
            timeout_s=900,
        )
        received = list(hooks.received)
    jobs = run.jobs()
    assert jobs.get("verify release") == "succeeded", run.log[-6000:]
    assert jobs.get("build image") == "succeeded", run.log[-6000:]
    report = json.loads((artifacts / "release-verify" / "release-verify.json").read_text())
    verdicts = {c["name"]: c["verdict"] for c in report["result"]["checks"]}
    assert verdicts["tag-annotated"] == "passed", verdicts
    assert verdicts["work-tree-clean"] == "passed", verdicts
    assert verdicts["github-production-environment"] == "passed", verdicts
    # the GitHub checks went to the fake, production-deploy's rule among them
    assert f"/repos/{REPOSITORY}/environments/production-deploy" in github.paths()
    assert jobs.get("smoke staging") == "failed", run.log[-6000:]
    assert jobs.get("deploy staging") == "succeeded", run.log[-6000:]
    assert jobs.get("notify outcome") == "succeeded", run.log[-6000:]
    for never in ("approve production", "production", "monitor production"):
        assert never not in jobs, never
    # Production untouched: nothing of its Compose project exists.
    project = f"label=com.docker.compose.project={PREFIX}-production"
    listing = ["docker", "ps", "-aq", "--filter", project]
    found = subprocess.run(listing, capture_output=True, text=True, check=True).stdout.split()
    assert found == []
    # One notice, to Slack, naming staging; the status page got nothing.
    assert [r.path for r in received] == ["/slack"], [r.path for r in received]
    text = json.dumps(received[0].json)
    assert "staging" in text and "production was not touched" in text

    # (a) the build's digest
    outputs = dict(re.findall(r"::set-output:: (image|digest)=(\S+)", run.log))
    repository = f"{registry}/example/rbac-api"
    assert outputs["image"] == f"{repository}@{outputs['digest']}", outputs
    # The registry's own digest of the pushed manifest (distribution's API): the same.
    request = urllib.request.Request(
        f"http://{registry}/v2/example/rbac-api/manifests/1.15.1",
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
    # deploytools built it: the migration lint's verdict is in the labels (deploy's auto
    # strategy reads it), from the lint of this build, not written by hand.
    assert labels["deploytools.migrations.expand-only"] in ("true", "false"), labels
    assert "Success - Main build the image from the tag, lint its migrations, push it" in run.log
    for step in ("pull the pushed manifest by its digest", "verify the image (labels, version"):
        assert f"Success - Main {step}" in run.log, step
    # Staging runs the build's digest, pulled from the registry by the deploy job.
    status = subprocess.run(
        [sys.executable, "-m", "deploytools", "--config", "deploy.toml", "--json", "status",
         "--env", "staging"],
        cwd=act.git_server.work, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    serving = json.loads(status.stdout)["result"]
    assert serving["release"]["image"] == outputs["image"]
    # Rolled (the image says expand-only): the release before stays up, drained, taking no
    # traffic, for a rollback by switch during the watch; every other app container runs the
    # build's digest.
    assert serving["release"]["strategy"] == "rolling", serving["release"]
    kept = serving["kept"]["container"]
    app = [s for s in serving["services"] if s["service"] == "app" and s["container"] != kept]
    assert app and all(outputs["image"] in s["repo_digests"] for s in app), app
    (before,) = [s for s in serving["services"] if s["container"] == kept]
    assert before["image"] == staging
