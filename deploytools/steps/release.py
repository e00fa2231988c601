"""`deploytools release verify`: the runbook's pre-deployment review of a release tag.

Every check reads git (never the work tree, except where the check is about the work tree) and
runs even when an earlier one failed, so that one run shows every problem. A malformed tag, an
unknown tag or a path that is not a git repository is a usage error before any check runs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import total_ordering
from pathlib import Path, PurePosixPath
from typing import Literal

from deploytools import migration_lint
from deploytools.commands import git
from deploytools.context import StepContext
from deploytools.errors import (
    CheckFailed,
    DeadlineExceeded,
    DeployError,
    ExternalCommandFailed,
    UsageError,
)
from deploytools.github import CiJob, GitHub
from deploytools.store.records import utc_now
from deploytools.visible import invisibles, visible

GIT_TIMEOUT_S = 60.0
#: Seconds between two reads of a code-quality run that is still going.
CI_POLL_S = 15.0
#: Seconds to wait for a code-quality run that has not started (of github.ci_wait_s).
CI_START_WAIT_S = 120.0
#: Used with fullmatch only: "$" also matches before a final newline ("v1.15.2\n").
TAG_RE = re.compile(
    r"v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
PRODUCTION = "production"
#: The GitHub environment holding production's secrets for release.yml's jobs after the approval.
PRODUCTION_DEPLOY = "production-deploy"

Verdict = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """One check of a release: its name, passed/failed/skipped, and why."""

    name: str
    verdict: Verdict
    reason: str

    @property
    def failed(self) -> bool:
        return self.verdict == "failed"


@dataclass(frozen=True)
class CodeQuality:
    """The code-quality gate's run on the tagged commit (the runbook's "Code Quality Status"):
    each job of the CI workflow and its result, or why there is none."""

    note: str
    jobs: tuple[CiJob, ...] = ()
    url: str = ""


@total_ordering
@dataclass(frozen=True)
class Version:
    """A release version from a tag `vMAJOR.MINOR.PATCH[-PRERELEASE]`, ordered as SemVer orders."""

    major: int
    minor: int
    patch: int
    prerelease: str = ""

    @classmethod
    def parse(cls, tag: str) -> Version | None:
        match = TAG_RE.fullmatch(tag)
        if not match:
            return None
        major, minor, patch, pre = match.groups()
        return cls(int(major), int(minor), int(patch), pre or "")

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.prerelease}" if self.prerelease else core

    @property
    def tag(self) -> str:
        return f"v{self}"

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # A release sorts after its pre-releases; pre-release identifiers compare numerically
        # when numeric, and numeric ones before alphanumeric ones.
        pre = tuple(
            (0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease.split(".") if p
        )
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()


class CheckList:
    """The failed checks of a report and whether there are none (release and image verify)."""

    checks: tuple[CheckResult, ...]

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.failed)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class ReleaseReport(CheckList):
    """What `release verify` found about one tag."""

    tag: str
    version: str
    commit: str
    target_env: str
    repository: str
    source_dir: str
    checks: tuple[CheckResult, ...]
    previous_tag: str | None = None
    #: None when the migrations could not be linted; True when the release only adds schema.
    expand_only: bool | None = None
    migration_findings: tuple[str, ...] = field(default=())
    code_quality: CodeQuality = field(default_factory=lambda: CodeQuality("not read"))
    #: When the verification ran (UTC, ISO 8601): the report's duration of the step.
    started: str = ""
    finished: str = ""

    def raise_if_failed(self) -> None:
        """CheckFailed naming every failed check, when any failed."""
        if self.failed:
            names = ", ".join(c.name for c in self.failed)
            raise CheckFailed(
                f"release {self.tag} failed {len(self.failed)} check(s): {names}",
                untouched="nothing was built or deployed",
                hint="fix what each failed check names, then tag again (or move the tag) and rerun",
                facts={
                    "tag": self.tag,
                    "failed": [c.name for c in self.failed],
                    "report": dataclasses.asdict(self),
                },
            )


GitRunner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_git(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Runs one git argv with a deadline; git never prompts (no terminal, no askpass)."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        return subprocess.run(
            list(argv), env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise DeadlineExceeded(
            f"git did not answer within {GIT_TIMEOUT_S:.0f} s: {' '.join(argv)}",
            untouched="nothing was changed",
        ) from None
    except FileNotFoundError:
        raise UsageError(
            "git is not installed", untouched="nothing was done", hint="install git"
        ) from None


# -- Inputs: usage errors before anything runs -----------------------------------------------


def parse_tag(tag: str) -> Version:
    """The version of a release tag, or a UsageError for anything but `vMAJOR.MINOR.PATCH[-PRE]`."""
    version = Version.parse(tag)
    if version is None:
        hidden = invisibles(tag)
        because = f" (it holds {', '.join(hidden)})" if hidden else ""
        raise UsageError(
            f'"{visible(tag)}" is not a release tag{because}: expected vMAJOR.MINOR.PATCH, '
            "for example v1.15.2 (a pre-release may add -rc.1)",
            untouched="nothing was done",
            facts={"tag": tag},
        )
    return version


def repository_root(repo: Path, runner: GitRunner = run_git) -> Path:
    """The top level of the git work tree at `repo`, or a UsageError."""
    if not repo.is_dir():
        raise UsageError(
            f"{repo} is not a directory", untouched="nothing was done", facts={"repo": str(repo)}
        )
    done = runner(git.is_repository(repo))
    if done.returncode != 0:
        raise UsageError(
            f"{repo} is not a git repository",
            untouched="nothing was done",
            hint="pass --repo with the path of the release's git repository",
            facts={"repo": str(repo)},
        )
    return Path(done.stdout.strip())


def tag_commit(root: Path, tag: str, runner: GitRunner = run_git) -> str:
    """The commit `tag` points at, or a UsageError when the tag does not exist."""
    done = runner(git.commit_of(root, git.tag_ref(tag)))
    if done.returncode != 0 or not done.stdout.strip():
        # A tag that exists but names a blob or a tree (git tag NAME OBJECT) is not missing.
        peeled = runner(git.object_type(root, git.tag_ref(tag) + "^{}"))
        kind = peeled.stdout.strip() if peeled.returncode == 0 else ""
        if kind in ("blob", "tree"):
            raise UsageError(
                f"tag {tag} names a {kind}, not a commit: a release tag must point at a commit",
                untouched="nothing was done",
                hint=f"recreate it on the release commit: git tag -f -a {tag} COMMIT",
                facts={"tag": tag, "repo": str(root), "object_type": kind},
            )
        raise UsageError(
            f"tag {tag} does not exist in {root}",
            untouched="nothing was done",
            hint="push the tag, or fetch tags (git fetch --tags) into this clone",
            facts={"tag": tag, "repo": str(root)},
        )
    return done.stdout.strip()


def default_source_dir(ctx: StepContext, root: Path) -> str:
    """The service's directory inside the release repository, relative to its root.

    When the release repository is the one deploy.toml lives in, `project.source_dir` (relative
    to deploy.toml) is used; any other repository holds the service at its root (".").
    """
    configured = (ctx.config.root / ctx.config.project.source_dir).resolve()
    try:
        relative = configured.relative_to(root.resolve())
    except ValueError:
        return "."
    return relative.as_posix() or "."


def _in_source(source_dir: str, name: str) -> str:
    return (PurePosixPath(source_dir) / name).as_posix().removeprefix("./")


@contextmanager
def extracted(root: Path, ref: str, runner: GitRunner = run_git) -> Iterator[Path]:
    """The tree of `ref`, extracted from git into a temporary directory (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="deploytools-src-") as tmp:
        archive = Path(tmp) / "source.tar"
        done = runner(git.archive(root, ref, archive))
        if done.returncode != 0:
            raise ExternalCommandFailed(
                f"git archive {ref} failed: {done.stderr.strip()}", untouched="nothing was done"
            )
        tree = Path(tmp) / "tree"
        tree.mkdir()
        with tarfile.open(archive) as tar:
            tar.extractall(tree, filter="data")
        archive.unlink()
        yield tree


# -- The checks ----------------------------------------------------------------------------------


def _passed(name: str, reason: str) -> CheckResult:
    return CheckResult(name, "passed", reason)


def _failed(name: str, reason: str) -> CheckResult:
    return CheckResult(name, "failed", reason)


def _skipped(name: str, reason: str) -> CheckResult:
    return CheckResult(name, "skipped", reason)


def check_tag_format(version: Version, target_env: str, *, guarded: bool = False) -> CheckResult:
    """A pre-release may go to staging, never to production (nor to any environment whose
    deploys need approval: `guarded`)."""
    if version.prerelease and (target_env == PRODUCTION or guarded):
        return _failed(
            "tag-format",
            f"{version.tag} is a pre-release: it may go to staging, never to {target_env}",
        )
    return _passed("tag-format", f"{version.tag} is a release tag for {target_env}")


def check_annotated(root: Path, tag: str, runner: GitRunner) -> CheckResult:
    kind = runner(git.object_type(root, git.tag_ref(tag))).stdout.strip()
    if kind == "tag":
        return _passed("tag-annotated", f"{tag} is an annotated tag")
    return _failed(
        "tag-annotated",
        f"{tag} is a lightweight tag (points at a {kind or 'missing object'}); "
        f"recreate it with `git tag -a {tag}`",
    )


def check_on_release_branch(
    root: Path, tag: str, commit: str, remote: str, branch: str, runner: GitRunner
) -> CheckResult:
    tracking = f"refs/remotes/{remote}/{branch}"
    if runner(git.commit_of(root, tracking)).returncode != 0:
        return _failed(
            "tag-on-release-branch",
            f"{remote}/{branch} is not known in this clone; fetch it (git fetch {remote})",
        )
    done = runner(git.is_ancestor(root, commit, tracking))
    if done.returncode == 0:
        return _passed("tag-on-release-branch", f"{tag} ({commit[:12]}) is on {remote}/{branch}")
    return _failed(
        "tag-on-release-branch",
        f"{tag} ({commit[:12]}) is not reachable from {remote}/{branch}: "
        "release only commits that are merged and pushed",
    )


def check_signed(root: Path, tag: str, required: bool, runner: GitRunner) -> CheckResult:
    if not required:
        return _skipped("tag-signed", "not required (release.require_signed_tag = false)")
    done = runner(git.verify_tag(root, git.tag_ref(tag)))
    if done.returncode == 0:
        return _passed("tag-signed", f"{tag} carries a good signature")
    detail = (done.stderr.strip().splitlines() or ["no signature"])[-1]
    return _failed("tag-signed", f"{tag} has no valid signature: {detail}")


def check_version_file(
    root: Path, tag: str, version: Version, source_dir: str, runner: GitRunner
) -> CheckResult:
    path = _in_source(source_dir, "VERSION")
    done = runner(git.show_file(root, git.tag_ref(tag), path))
    if done.returncode != 0:
        return _failed("version-file", f"{path} does not exist at {tag}")
    found = done.stdout.strip()
    if found == str(version):
        return _passed("version-file", f"{path} at {tag} says {found}")
    # A byte-order mark or a zero-width character prints as nothing: "says 1.15.3, the tag
    # 1.15.3" would read as a contradiction. Name them instead.
    hidden = invisibles(found)
    if hidden:
        return _failed(
            "version-file",
            f"{path} at {tag} says {visible(found)}: it holds {', '.join(hidden)}, "
            f"invisible but not part of a version; save it as the plain text {version}",
        )
    return _failed("version-file", f"{path} at {tag} says {found or '(empty)'}, the tag {version}")


def check_clean_tree(root: Path, runner: GitRunner) -> CheckResult:
    lines = runner(git.status_porcelain(root)).stdout.splitlines()
    if not lines:
        return _passed("work-tree-clean", "no uncommitted or untracked files")
    shown = ", ".join(line[3:] for line in lines[:5]) + (" ..." if len(lines) > 5 else "")
    return _failed("work-tree-clean", f"{len(lines)} uncommitted or untracked file(s): {shown}")


def check_nothing_unpushed(root: Path, runner: GitRunner) -> CheckResult:
    lines = runner(git.unpushed_commits(root)).stdout.splitlines()
    if not lines:
        return _passed("nothing-unpushed", "every local commit is on a remote")
    return _failed(
        "nothing-unpushed",
        f"{len(lines)} local commit(s) on no remote, newest {lines[0][:60]}",
    )


_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*)$")


def changelog_section(text: str, version: Version) -> str | None:
    """The body of the CHANGELOG section for `version` ("## 1.15.2", "## [v1.15.2] - date"), or
    None when there is none."""
    wanted = re.compile(rf"^\[?v?{re.escape(str(version))}\]?(?:\s|$|\s*[-(])")
    lines = text.splitlines()
    for i, line in enumerate(lines):
        head = _HEADING_RE.match(line)
        if head and wanted.match(head.group(2).strip()):
            level = len(head.group(1))
            body: list[str] = []
            for following in lines[i + 1 :]:
                nxt = _HEADING_RE.match(following)
                if nxt and len(nxt.group(1)) <= level:
                    break
                body.append(following)
            return "\n".join(body)
    return None


def check_release_notes(
    root: Path, tag: str, version: Version, source_dir: str, runner: GitRunner
) -> CheckResult:
    ref = git.tag_ref(tag)
    notes = f"RELEASE_NOTES_{version.tag}.md"
    for directory in dict.fromkeys([source_dir, "."]):
        path = _in_source(directory, notes)
        done = runner(git.show_file(root, ref, path))
        if done.returncode == 0:
            if done.stdout.strip():
                return _passed("release-notes", f"{path} at {tag}")
            return _failed("release-notes", f"{path} at {tag} is empty")
    for directory in dict.fromkeys([source_dir, "."]):
        path = _in_source(directory, "CHANGELOG.md")
        done = runner(git.show_file(root, ref, path))
        if done.returncode != 0:
            continue
        section = changelog_section(done.stdout, version)
        if section is None:
            continue
        if section.strip():
            return _passed("release-notes", f"{path} at {tag} has a section for {version}")
        return _failed("release-notes", f"the section for {version} in {path} is empty")
    return _failed(
        "release-notes",
        f"no {_in_source(source_dir, notes)} and no CHANGELOG.md section for {version} at {tag}",
    )


def release_versions(root: Path, runner: GitRunner) -> list[Version]:
    """Every release tag's version in the repository (tags of other shapes ignored), sorted."""
    tags = runner(git.list_tags(root)).stdout.split()
    return sorted(v for v in (Version.parse(t) for t in tags) if v is not None)


def previous_release(versions: Sequence[Version], version: Version) -> Version | None:
    """The newest final release older than `version` (what production runs before this one)."""
    older = [v for v in versions if v < version and not v.prerelease]
    return older[-1] if older else None


def check_version_order(
    versions: Sequence[Version], version: Version, allow_downgrade: bool
) -> CheckResult:
    others = [v for v in versions if v != version and not v.prerelease]
    if not others:
        return _passed("version-higher", f"{version} is the first release")
    last = max(others)
    if version > last:
        return _passed("version-higher", f"{version} is higher than the last release {last}")
    if allow_downgrade:
        return _passed(
            "version-higher", f"{version} is not higher than {last}; allowed by --allow-downgrade"
        )
    return _failed(
        "version-higher",
        f"{version} is not higher than the last release {last} (use --allow-downgrade on purpose)",
    )


@dataclass(frozen=True)
class MigrationChecks:
    heads: CheckResult
    lint: CheckResult
    expand_only: bool | None
    findings: tuple[str, ...]


def check_migrations(
    root: Path,
    tag: str,
    previous: Version | None,
    source_dir: str,
    alembic_ini: str,
    runner: GitRunner,
) -> MigrationChecks:
    """One Alembic head at `tag`; the lint of the SQL of the migrations added since `previous`."""
    with extracted(root, git.tag_ref(tag), runner) as tree:
        source = tree / source_dir
        if not (source / alembic_ini).is_file():
            reason = f"no {_in_source(source_dir, alembic_ini)} at {tag}: no Alembic migrations"
            return MigrationChecks(
                _skipped("alembic-single-head", reason),
                _skipped("migration-lint", reason),
                expand_only=True,
                findings=(),
            )
        try:
            scripts = migration_lint.inspect_scripts(source, alembic_ini=alembic_ini)
        except DeployError as exc:
            reason = exc.message
            return MigrationChecks(
                _failed("alembic-single-head", reason),
                _skipped("migration-lint", "the migrations could not be read"),
                None,
                (),
            )
        if len(scripts.heads) != 1:
            heads = ", ".join(scripts.heads) or "none"
            return MigrationChecks(
                _failed(
                    "alembic-single-head",
                    f"{len(scripts.heads)} Alembic heads at {tag} ({heads}); merge them "
                    "(alembic merge) so that upgrade head has one meaning",
                ),
                _skipped("migration-lint", "needs exactly one Alembic head"),
                None,
                (),
            )
        head = scripts.heads[0]
        heads_ok = _passed("alembic-single-head", f"one Alembic head at {tag}: {head}")
        previous_head: str | None = None
        if previous is not None:
            with extracted(root, git.tag_ref(previous.tag), runner) as old_tree:
                old_source = old_tree / source_dir
                if (old_source / alembic_ini).is_file():
                    try:
                        old = migration_lint.inspect_scripts(old_source, alembic_ini=alembic_ini)
                    except DeployError as exc:
                        reason = f"the previous release {previous.tag}: {exc.message}"
                        return MigrationChecks(
                            heads_ok, _failed("migration-lint", reason), None, ()
                        )
                    if len(old.heads) != 1:
                        return MigrationChecks(
                            heads_ok,
                            _failed(
                                "migration-lint",
                                f"the previous release {previous.tag} has {len(old.heads)} "
                                "Alembic heads; the migrations it lacks cannot be told apart",
                            ),
                            None,
                            (),
                        )
                    previous_head = old.heads[0]
        try:
            result = migration_lint.lint_release(
                source,
                previous_head=previous_head,
                head=head,
                files=scripts.files,
                alembic_ini=alembic_ini,
            )
        except DeployError as exc:
            return MigrationChecks(heads_ok, _failed("migration-lint", exc.message), None, ())
    since = (
        f"since {previous.tag} ({previous_head or 'no migrations'})"
        if previous
        else "from the start"
    )
    findings = tuple(f.describe() for f in result.findings)
    kind = "expand-only" if result.expand_only else "NOT expand-only"
    if not result.revisions:
        lint = _passed("migration-lint", f"no migrations added {since}")
    elif result.failing:
        lint = _failed(
            "migration-lint",
            f"{len(result.failing)} finding(s) in {len(result.revisions)} migration(s) {since}: "
            + "; ".join(f.describe() for f in result.failing),
        )
    else:
        acked = (
            f"; acknowledged: {'; '.join(f.describe() for f in result.acknowledged)}"
            if result.acknowledged
            else ""
        )
        lint = _passed(
            "migration-lint",
            f"{len(result.revisions)} migration(s) {since} ({', '.join(result.revisions)}), "
            f"{kind}{acked}",
        )
    return MigrationChecks(heads_ok, lint, result.expand_only, findings)


@dataclass(frozen=True)
class GitHubFindings:
    """What release verify learnt from GitHub: its checks, and the code-quality run."""

    checks: tuple[CheckResult, ...]
    code_quality: CodeQuality


GITHUB_CHECKS = ("github-required-checks", "github-code-quality", "github-production-environment")


def check_github(
    ctx: StepContext,
    *,
    commit: str,
    tag: str,
    environ: Mapping[str, str],
    gh_host: str | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GitHubFindings:
    """The tagged commit's required checks and code-quality run, and the production
    environment's protection. Each check fails on its own when GitHub cannot answer it."""
    settings = ctx.config.github
    token = environ.get(settings.token_env, "")
    if not token or not settings.repository:
        why = (
            f"no GitHub token (${settings.token_env} is not set)"
            if not token
            else "no github.repository in deploy.toml"
        )
        return GitHubFindings(
            tuple(_skipped(n, why) for n in GITHUB_CHECKS), CodeQuality(f"not read: {why}")
        )
    api = GitHub(settings.repository, token, gh_host=gh_host or settings.api_url)
    results: list[CheckResult] = []
    try:
        checks = api.required_checks_green(commit, ctx.config.project.release_branch)
        results.append(
            CheckResult(GITHUB_CHECKS[0], "passed" if checks.ok else "failed", checks.reason)
        )
    except DeployError as exc:
        results.append(_failed(GITHUB_CHECKS[0], exc.message))
    if not settings.ci_workflow:
        why = "github.ci_workflow is empty in deploy.toml"
        results.append(_skipped(GITHUB_CHECKS[1], why))
        quality = CodeQuality(f"not read: {why}")
    else:
        try:
            result, quality = check_code_quality(
                api, commit, settings.ci_workflow, settings.ci_wait_s,
                progress=ctx.progress, clock=clock, sleep=sleep,
            )  # fmt: skip
        except DeployError as exc:
            result, quality = (
                _failed(GITHUB_CHECKS[1], exc.message),
                CodeQuality(f"not read: {exc.message}"),
            )
        results.append(result)
    try:
        # The approval's environment, and the one holding production's secrets for the jobs
        # after it (no reviewers): its tag rule keeps other refs' runs from those secrets.
        verdicts = [
            api.environment_protected(PRODUCTION, tag),
            api.environment_protected(PRODUCTION_DEPLOY, tag, reviewers=False),
        ]
        ok = all(v.ok for v in verdicts)
        reason = "; ".join(v.reason for v in verdicts if v.ok is ok)
        results.append(CheckResult(GITHUB_CHECKS[2], "passed" if ok else "failed", reason))
    except DeployError as exc:
        results.append(_failed(GITHUB_CHECKS[2], exc.message))
    return GitHubFindings(tuple(results), quality)


def check_code_quality(
    api: GitHub,
    commit: str,
    workflow: str,
    wait_s: float,
    *,
    progress: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[CheckResult, CodeQuality]:
    """The newest run of `workflow` on `commit` passed; waits up to `wait_s` for it to finish
    (or to start: a tag pushed with its commit races the gate)."""
    name = GITHUB_CHECKS[1]
    start = clock()
    # GitHub starts a pushed commit's run within seconds: one not started by CI_START_WAIT_S is
    # not coming, so a missing run is waited for less than a running one.
    deadlines = {False: start + wait_s, True: start + min(wait_s, CI_START_WAIT_S)}
    while True:
        run = api.ci_run(commit, workflow)
        deadline = deadlines[run is None]
        if (run is not None and run.completed) or clock() >= deadline:
            break
        state = "has not started" if run is None else f"is {run.status}"
        left = max(0.0, deadline - clock())
        progress(f"waiting   {workflow} on {commit[:12]} {state} ({left:.0f} s left to wait)")
        sleep(min(CI_POLL_S, left))
    waited = f" (waited {clock() - start:.0f} s)" if wait_s > 0 else ""
    if run is None:
        return (
            _failed(
                name,
                f"{workflow} never ran on {commit[:12]}{waited}: the release has no "
                "code-quality result; push the commit to the release branch (the gate runs on "
                "push) and rerun",
            ),
            CodeQuality(f"{workflow} never ran on {commit[:12]}"),
        )
    summary = f"{workflow} run {run.run_id} (attempt {run.attempt})"
    quality = CodeQuality(
        f"{summary} on {commit[:12]}: {run.conclusion or run.status}", run.jobs, run.url
    )
    if not run.completed:
        going = ", ".join(j.name for j in run.jobs if j.state not in _FINISHED) or "all"
        return (
            _failed(
                name,
                f"{summary} is still {run.status}{waited} (unfinished: {going}); rerun this "
                "check when it has finished",
            ),
            quality,
        )
    names = ", ".join(j.name for j in run.jobs)
    if run.green:
        return _passed(name, f"{summary} passed: {len(run.jobs)} job(s) green: {names}"), quality
    bad = ", ".join(f"{j.name} ({j.state})" for j in run.jobs if not j.green)
    return _failed(name, f"{summary} concluded {run.conclusion}: {bad or names}"), quality


#: A job's states once it has finished (GitHub's conclusions).
_FINISHED = frozenset(
    {"success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required"}
)


# -- The step ------------------------------------------------------------------------------------


def run(
    ctx: StepContext,
    *,
    tag: str,
    repo: Path,
    target_env: str = PRODUCTION,
    source_dir: str | None = None,
    allow_downgrade: bool = False,
    environ: Mapping[str, str] | None = None,
    gh_host: str | None = None,
    runner: GitRunner = run_git,
) -> ReleaseReport:
    """Verify release tag `tag` of the git repository at `repo`; every check runs.

    :param ctx: the step context (configuration, progress).
    :param tag: the release tag, `vMAJOR.MINOR.PATCH` (a `-PRERELEASE` only for staging).
    :param repo: a path inside the release's git work tree.
    :param target_env: the environment the release is meant for; pre-releases fail production.
    :param source_dir: the service's directory in the repository, relative to its root; None
        takes `project.source_dir` when `repo` is deploy.toml's own repository, else the root.
    :param allow_downgrade: accept a version not higher than the last release.
    :param environ: where the GitHub token is read from (default: os.environ).
    :param gh_host: the GitHub API root, overriding github.api_url.
    :param runner: runs git argv (tests may swap it).
    :raises UsageError: a malformed or unknown tag, or `repo` is not a git repository.
    """
    started = utc_now()
    version = parse_tag(tag)
    environment = ctx.config.environment(target_env)  # an unknown name is a usage error
    root = repository_root(repo, runner)
    commit = tag_commit(root, tag, runner)
    environ = os.environ if environ is None else environ
    source = source_dir if source_dir is not None else default_source_dir(ctx, root)
    source = PurePosixPath(source).as_posix()
    if source.startswith("/") or ".." in PurePosixPath(source).parts:
        raise UsageError(
            f"--source-dir must be a path inside the repository, got {source}",
            untouched="nothing was done",
        )
    project = ctx.config.project
    checks: list[CheckResult] = []

    def add(result: CheckResult) -> None:
        checks.append(result)
        ctx.progress(f"{result.verdict:<7} {result.name}: {result.reason}")

    add(check_tag_format(version, target_env, guarded=environment.requires_approval))
    add(check_annotated(root, tag, runner))
    add(check_on_release_branch(root, tag, commit, project.remote, project.release_branch, runner))
    add(check_signed(root, tag, ctx.config.release.require_signed_tag, runner))
    add(check_version_file(root, tag, version, source, runner))
    add(check_clean_tree(root, runner))
    add(check_nothing_unpushed(root, runner))
    add(check_release_notes(root, tag, version, source, runner))
    versions = release_versions(root, runner)
    add(check_version_order(versions, version, allow_downgrade))
    previous = previous_release(versions, version)
    migrations = check_migrations(
        root, tag, previous, source, ctx.config.release.alembic_ini, runner
    )
    add(migrations.heads)
    add(migrations.lint)
    github = check_github(ctx, commit=commit, tag=tag, environ=environ, gh_host=gh_host)
    for result in github.checks:
        add(result)
    return ReleaseReport(
        tag=tag,
        version=str(version),
        commit=commit,
        target_env=target_env,
        repository=str(root),
        source_dir=source,
        checks=tuple(checks),
        previous_tag=previous.tag if previous else None,
        expand_only=migrations.expand_only,
        migration_findings=migrations.findings,
        code_quality=github.code_quality,
        started=started,
        finished=utc_now(),
    )
