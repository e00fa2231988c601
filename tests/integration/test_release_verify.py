"""`release verify` on real git repositories: the good release, and one bad copy per problem.

The good release is the session's release repository (make-release-repo: v1.15.1, v1.15.2 and a
bare origin). Each bad case copies it with its own origin and adds one release v1.15.3 that is
wrong in exactly one way; each test asserts exactly which check fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.config import ReleaseConfig, load_config
from deploytools.context import StepContext
from deploytools.errors import UsageError
from deploytools.steps import release as release_step
from deploytools.steps import report as report_step
from deploytools.steps.release import ReleaseReport
from tests.fakes.github_server import CI_JOBS, FakeGitHub
from tests.helpers.shared_stack import build_variant

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "deploy.toml"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "dtrel test",
    "GIT_AUTHOR_EMAIL": "dtrel@example.com",
    "GIT_COMMITTER_NAME": "dtrel test",
    "GIT_COMMITTER_EMAIL": "dtrel@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}

NOT_NULL_MIGRATION = '''"""Users get an email address.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
{marker}

def upgrade() -> None:
    op.add_column("users", sa.Column("email", sa.String(255), nullable=False))


def downgrade() -> None:
    op.drop_column("users", "email")
'''

ADDITIVE_MIGRATION = '''"""{doc}

Revision ID: {rev}
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("{column}", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "{column}")
'''


class Repo:
    """A copy of the release repository with its own origin, for one bad case."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.path), *args],
            capture_output=True,
            text=True,
            check=True,
            env={**GIT_ENV, "PATH": "/usr/bin:/bin", "HOME": str(self.path.parent)},
        )
        return done.stdout.strip()

    def write(self, name: str, text: str) -> None:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def release(
        self,
        version: str = "1.15.3",
        *,
        version_file: str | None = None,
        notes: str | None = "- A small fix.\n",
        files: dict[str, str] | None = None,
        annotated: bool = True,
        branch: str = "main",
        push: bool = True,
    ) -> str:
        """Commit a release on `branch` and tag it; push branch and tag unless told not to."""
        if branch != "main":
            self.git("checkout", "-q", "-b", branch)
        self.write("VERSION", (version_file or version) + "\n")
        if notes is not None:
            self.write(f"RELEASE_NOTES_v{version}.md", f"# rbac-api {version}\n\n{notes}")
        for name, text in (files or {}).items():
            self.write(name, text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", f"Release {version}")
        tag = f"v{version}"
        if annotated:
            self.git("tag", "-a", tag, "-m", f"rbac-api {version}")
        else:
            self.git("tag", tag)
        if push:
            self.git("push", "-q", "origin", branch, tag)
        if branch != "main":
            self.git("checkout", "-q", "main")
        return tag


@pytest.fixture
def bad_repo(release_repo, tmp_path: Path) -> Repo:  # type: ignore[no-untyped-def]
    """A copy of the release repository whose origin is its own copy too."""
    path = tmp_path / "rbac-api"
    origin = tmp_path / "rbac-api.origin.git"
    shutil.copytree(release_repo.path, path, symlinks=True)
    shutil.copytree(release_repo.origin, origin, symlinks=True)
    repo = Repo(path)
    repo.git("remote", "set-url", "origin", str(origin))
    return repo


Verify = Callable[..., ReleaseReport]


#: The image repository of the verify fixture: its own, so that no image another run left on the
#: engine counts as this release's (release verify lints in an image of the release if one is
#: there, and announces the lint for the build otherwise).
VERIFY_REPOSITORY = f"dtrender/verify-{secrets.token_hex(4)}"


@pytest.fixture
def verify() -> Verify:
    config = load_config(CONFIG)
    project = dataclasses.replace(config.project, image_repository=VERIFY_REPOSITORY)
    ctx = StepContext(config=dataclasses.replace(config, project=project))

    def run(repo: Path, tag: str, **options: object) -> ReleaseReport:
        return release_step.run(ctx, tag=tag, repo=repo, environ={}, **options)  # type: ignore[arg-type]

    return run


def failed(report: ReleaseReport) -> set[str]:
    return {c.name for c in report.failed}


def verdicts(report: ReleaseReport) -> dict[str, str]:
    return {c.name: c.verdict for c in report.checks}


def test_the_good_release_passes_every_check(release_repo, verify: Verify) -> None:  # type: ignore[no-untyped-def]
    report = verify(release_repo.path, "v1.15.2")
    assert failed(report) == set()
    assert verdicts(report) == {
        "tag-format": "passed",
        "tag-annotated": "passed",
        "tag-on-release-branch": "passed",
        "tag-signed": "skipped",
        "version-file": "passed",
        "work-tree-clean": "passed",
        "nothing-unpushed": "passed",
        "release-notes": "passed",
        "version-higher": "passed",
        "alembic-single-head": "passed",
        "migration-lint": "skipped",
        "github-required-checks": "skipped",
        "github-code-quality": "skipped",
        "github-production-environment": "skipped",
    }
    assert report.commit == release_repo.commit("v1.15.2")
    assert report.previous_tag == "v1.15.1"
    # No image of v1.15.2 on the engine yet: the lint runs at the build, in the image.
    assert report.expand_only is None
    assert report.migration_lint_at == "build"
    lint = next(c for c in report.checks if c.name == "migration-lint")
    assert "runs at the build step (deploytools image build)" in lint.reason
    assert "from 0001 (the head of v1.15.1)" in lint.reason
    heads = next(c for c in report.checks if c.name == "alembic-single-head")
    assert heads.reason == "one Alembic head at v1.15.2: 0002"


def test_version_file_not_matching(bad_repo: Repo, verify: Verify) -> None:
    tag = bad_repo.release(version_file="1.15.2")
    report = verify(bad_repo.path, tag)
    assert failed(report) == {"version-file"}
    assert "says 1.15.2, the tag 1.15.3" in report.failed[0].reason


def test_lightweight_tag(bad_repo: Repo, verify: Verify) -> None:
    tag = bad_repo.release(annotated=False)
    assert failed(verify(bad_repo.path, tag)) == {"tag-annotated"}


def test_tag_not_on_the_release_branch(bad_repo: Repo, verify: Verify) -> None:
    tag = bad_repo.release(branch="experiment")
    report = verify(bad_repo.path, tag)
    assert failed(report) == {"tag-on-release-branch"}
    assert "not reachable from origin/main" in report.failed[0].reason


def test_dirty_tree(bad_repo: Repo, verify: Verify) -> None:
    bad_repo.write("rbac_api/app.py", "# edited and not committed\n")
    bad_repo.write("scratch.txt", "untracked\n")
    report = verify(bad_repo.path, "v1.15.2")
    assert failed(report) == {"work-tree-clean"}
    assert "2 uncommitted or untracked file(s)" in report.failed[0].reason


def test_unpushed_commit(bad_repo: Repo, verify: Verify) -> None:
    bad_repo.release(push=False)
    assert failed(verify(bad_repo.path, "v1.15.2")) == {"nothing-unpushed", "version-higher"}


def test_missing_release_notes(bad_repo: Repo, verify: Verify) -> None:
    tag = bad_repo.release(notes=None)
    report = verify(bad_repo.path, tag)
    assert failed(report) == {"release-notes"}
    assert "RELEASE_NOTES_v1.15.3.md" in report.failed[0].reason


def test_empty_release_notes(bad_repo: Repo, verify: Verify) -> None:
    tag = bad_repo.release(notes="")
    bad_repo.write("RELEASE_NOTES_v1.15.3.md", "")  # the commit holds only the title; make it blank
    bad_repo.git("commit", "-q", "-am", "blank notes")
    bad_repo.git("tag", "-f", "-a", tag, "-m", "rbac-api 1.15.3")
    bad_repo.git("push", "-q", "-f", "origin", "main", tag)
    report = verify(bad_repo.path, tag)
    assert failed(report) == {"release-notes"}
    assert "is empty" in report.failed[0].reason


def test_changelog_section_counts_as_release_notes(bad_repo: Repo, verify: Verify) -> None:
    changelog = "# Changelog\n\n## [1.15.3] - 2026-02-01\n- A small fix.\n\n## [1.15.2]\n- x\n"
    tag = bad_repo.release(notes=None, files={"CHANGELOG.md": changelog})
    report = verify(bad_repo.path, tag)
    assert failed(report) == set()
    assert "CHANGELOG.md" in next(c for c in report.checks if c.name == "release-notes").reason


def test_lower_version(bad_repo: Repo, verify: Verify) -> None:
    tag = bad_repo.release("1.15.0")
    report = verify(bad_repo.path, tag)
    assert failed(report) == {"version-higher"}
    assert "not higher than the last release 1.15.2" in report.failed[0].reason
    allowed = verify(bad_repo.path, tag, allow_downgrade=True)
    assert failed(allowed) == set()


def test_two_alembic_heads(bad_repo: Repo, verify: Verify) -> None:
    files = {
        f"migrations/versions/{rev}_{column}.py": ADDITIVE_MIGRATION.format(
            doc=f"Add {column}.", rev=rev, column=column
        )
        for rev, column in (("0003a", "nickname"), ("0003b", "avatar"))
    }
    report = verify(bad_repo.path, bad_repo.release(files=files))
    assert failed(report) == {"alembic-single-head"}
    assert "2 Alembic heads" in report.failed[0].reason
    assert verdicts(report)["migration-lint"] == "skipped"


@pytest.fixture
def release_image(release_images, docker_client):  # type: ignore[no-untyped-def]
    """Puts an image of a bad repo's release on the engine, as `image build` would have: the
    1.15.2 release image with the release's extra migration files, labelled with its commit."""
    tags: list[str] = []

    def build(repo: Repo, tag: str, files: dict[str, str]) -> str:
        commit = repo.git("rev-parse", f"{tag}^{{commit}}")
        reference = f"{VERIFY_REPOSITORY}:{tag.removeprefix('v')}"
        copies = "".join(f"COPY {Path(name).name} /app/{name}\n" for name in files)
        label = f'LABEL org.opencontainers.image.revision="{commit}"\n'
        tags.append(
            build_variant(
                docker_client,
                release_images["1.15.2"],
                reference,
                dockerfile=copies + label,
                files={Path(name).name: text for name, text in files.items()},
            )
        )
        return reference

    yield build
    for tag in tags:
        with contextlib.suppress(Exception):
            docker_client.api.remove_image(tag, force=True)


def test_not_null_column_without_default(bad_repo: Repo, verify: Verify, release_image) -> None:  # type: ignore[no-untyped-def]
    files = {"migrations/versions/0003_user_email.py": NOT_NULL_MIGRATION.format(marker="")}
    tag = bad_repo.release(files=files)
    reference = release_image(bad_repo, tag, files)
    report = verify(bad_repo.path, tag)
    assert report.migration_lint_at == f"image {reference}"
    assert failed(report) == {"migration-lint"}
    reason = report.failed[0].reason
    assert "0003_user_email.py (0003): add-not-null-column" in reason
    assert "ALTER TABLE users ADD COLUMN email VARCHAR(255) NOT NULL" in reason
    assert report.expand_only is False


def test_not_null_column_acknowledged(bad_repo: Repo, verify: Verify, release_image) -> None:  # type: ignore[no-untyped-def]
    marker = "# deploytools: allow add-not-null-column users is empty until 1.16 ships signup"
    files = {"migrations/versions/0003_user_email.py": NOT_NULL_MIGRATION.format(marker=marker)}
    tag = bad_repo.release(files=files)
    release_image(bad_repo, tag, files)
    report = verify(bad_repo.path, tag)
    assert failed(report) == set()
    lint = next(c for c in report.checks if c.name == "migration-lint")
    assert "acknowledged: users is empty until 1.16 ships signup" in lint.reason
    assert "NOT expand-only" in lint.reason
    assert report.expand_only is False
    assert any("add-not-null-column" in f for f in report.migration_findings)


def test_a_pre_release_goes_to_staging_not_production(bad_repo: Repo, verify: Verify) -> None:
    tag = bad_repo.release("1.16.0-rc.1")
    assert failed(verify(bad_repo.path, tag)) == {"tag-format"}
    assert failed(verify(bad_repo.path, tag, target_env="staging")) == set()
    cli_run = CliRunner().invoke(
        cli,
        [
            "--config",
            str(CONFIG),
            "release",
            "verify",
            "--tag",
            tag,
            "--for",
            "staging",
            "--repo",
            str(bad_repo.path),
        ],
        env={"GITHUB_TOKEN": ""},
    )
    assert cli_run.exit_code == 0, cli_run.output
    assert "for staging: passed" in cli_run.stdout


@pytest.mark.parametrize("tag", ["v1.15", "1.15.2", "v1.15.2; rm -rf /", "v9.9.9"])
def test_bad_tags_are_usage_errors(release_repo, verify: Verify, tag: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError):
        verify(release_repo.path, tag)


def test_a_required_signature_is_checked(release_repo) -> None:  # type: ignore[no-untyped-def]
    config = load_config(CONFIG)
    strict = dataclasses.replace(config, release=ReleaseConfig(require_signed_tag=True))
    report = release_step.run(
        StepContext(config=strict), tag="v1.15.2", repo=release_repo.path, environ={}
    )
    assert failed(report) == {"tag-signed"}
    assert "v1.15.2 has no valid signature" in report.failed[0].reason


def test_an_unknown_target_environment_is_a_usage_error(release_repo, verify: Verify) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match='unknown environment "prod"'):
        verify(release_repo.path, "v1.15.2", target_env="prod")


def test_not_a_git_repository_is_a_usage_error(tmp_path: Path, verify: Verify) -> None:
    with pytest.raises(UsageError, match="is not a git repository"):
        verify(tmp_path, "v1.15.2")


# -- The command line --------------------------------------------------------------------------


def _config_with_github(tmp_path: Path, api_url: str) -> Path:
    text = CONFIG.read_text(encoding="utf-8")
    text = text.replace('api_url = "https://api.github.com"', f'api_url = "{api_url}"')
    text = text.replace('token_env = "GITHUB_TOKEN"', 'token_env = "DTREL_TEST_TOKEN"')
    # Relative paths of the configuration resolve against its directory: keep the real ones.
    text = text.replace('compose_files = ["', f'compose_files = ["{REPO_ROOT}/')
    path = tmp_path / "deploy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_json_summary_and_github(release_repo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    summary = tmp_path / "summary.md"
    with FakeGitHub() as github:
        github.protected_repository("example/rbac-api", sha=release_repo.commit("v1.15.2"))
        config = _config_with_github(tmp_path, github.url)
        result = CliRunner().invoke(
            cli,
            [
                "--config",
                str(config),
                "--json",
                "release",
                "verify",
                "--tag",
                "v1.15.2",
                "--repo",
                str(release_repo.path),
            ],
            env={"GITHUB_STEP_SUMMARY": str(summary), "DTREL_TEST_TOKEN": "t0ken"},
        )
        paths = github.paths()
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True
    checks = {c["name"]: c["verdict"] for c in data["result"]["checks"]}
    assert checks["github-required-checks"] == "passed"
    assert checks["github-production-environment"] == "passed"
    assert checks["github-code-quality"] == "passed"
    assert data["result"]["migration_lint_at"] in ("build", "image ghcr.io/example/rbac-api:1.15.2")
    assert "/repos/example/rbac-api/environments/production" in paths
    assert "/repos/example/rbac-api/actions/workflows/ci.yml/runs" in paths
    quality = data["result"]["code_quality"]
    assert [j["name"] for j in quality["jobs"]] == list(CI_JOBS)
    assert {j["state"] for j in quality["jobs"]} == {"success"}
    table = summary.read_text(encoding="utf-8")
    assert "| Check | Result | Details |" in table
    assert "| github-production-environment | ✅ passed |" in table
    assert "| dependency-audit | ✅ success |" in table
    # The report renders these results as the runbook's "Code Quality Status".
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "release-verify.json").write_text(result.stdout, encoding="utf-8")
    evidence = report_step.load_evidence((tmp_path / "results").glob("*.json"))
    assert evidence.release_verify is not None
    rows, note = report_step.code_quality(evidence.release_verify)
    assert [r["name"] for r in rows] == list(CI_JOBS)
    assert note.startswith(f"ci.yml run 7001 (attempt 1) on {release_repo.commit('v1.15.2')[:12]}")


def test_cli_waits_for_the_gate_and_fails_when_it_failed(release_repo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sha = release_repo.commit("v1.15.2")
    with FakeGitHub() as github:
        github.protected_repository("example/rbac-api", sha=sha)
        jobs = github.ci_run("example/rbac-api", sha=sha, conclusion="failure")
        jobs["jobs"][0]["conclusion"] = "success"  # test passed; the static checks did not
        config = _config_with_github(tmp_path, github.url)
        result = CliRunner().invoke(
            cli,
            ["--config", str(config), "release", "verify", "--tag", "v1.15.2",
             "--repo", str(release_repo.path)],
            env={"DTREL_TEST_TOKEN": "t0ken", "GITHUB_STEP_SUMMARY": ""},
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "failed  github-code-quality: ci.yml run 7001 (attempt 1) concluded failure: lint" in (
        result.stderr
    )
    assert "code quality: lint: failure" in result.stderr
    assert "failed 1 check(s): github-code-quality" in result.stderr


def test_cli_failed_check_exits_1_and_names_it(bad_repo: Repo) -> None:
    tag = bad_repo.release(annotated=False)
    result = CliRunner().invoke(
        cli,
        ["--config", str(CONFIG), "release", "verify", "--tag", tag, "--repo", str(bad_repo.path)],
        env={"GITHUB_TOKEN": ""},
    )
    assert result.exit_code == 1
    assert "failed  tag-annotated: v1.15.3 is a lightweight tag" in result.stderr
    assert "failed 1 check(s): tag-annotated" in result.stderr
    as_json = CliRunner().invoke(
        cli,
        [
            "--config",
            str(CONFIG),
            "--json",
            "release",
            "verify",
            "--tag",
            tag,
            "--repo",
            str(bad_repo.path),
        ],
        env={"GITHUB_TOKEN": ""},
    )
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)  # one document: the error, carrying the whole report
    assert data["ok"] is False
    assert data["error"]["facts"]["failed"] == ["tag-annotated"]
    checks = data["error"]["facts"]["report"]["checks"]
    assert len(checks) == 14  # 11 of git and Alembic, 3 of GitHub (skipped: no token)
    assert as_json.stderr.count("\n") == 1  # the error line only: no progress under --json


@pytest.mark.parametrize("tag", ["v1.15", "1.15.2", "v1.15.2; rm -rf /", "v7.0.0"])
def test_cli_bad_tag_exits_2_with_one_line(release_repo, tag: str) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(
        cli,
        [
            "--config",
            str(CONFIG),
            "release",
            "verify",
            "--tag",
            tag,
            "--repo",
            str(release_repo.path),
        ],
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ")
    assert "passed" not in result.stderr
