"""What the tag and its source say: the git reads of release verification and the checks of
the tag (format, annotation, branch, signature), its VERSION file, release notes, version order,
work tree and migrations. Git runs through the engine (`deploytools.engine.git`).
"""

from __future__ import annotations

import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from deploytools.commands import git
from deploytools.context import StepContext
from deploytools.engine.client import Engine
from deploytools.engine.connection import connect
from deploytools.engine.errors import EngineError
from deploytools.engine.git import GitRunner, run_git
from deploytools.errors import CheckFailed, DeployError, ExternalCommandFailed, UsageError
from deploytools.migration_tree import read_revisions
from deploytools.steps.migration_check import (
    Baseline,
    MigrationChecks,
    lint_image,
    previous_head,
    production_baseline,
)
from deploytools.steps.release_report import (
    PRODUCTION,
    CheckResult,
    check_failed,
    check_passed,
    check_skipped,
)
from deploytools.steps.release_version import Version
from deploytools.target import REVISION_LABEL
from deploytools.visible import invisibles, visible


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
            try:
                tar.extractall(tree, filter="data")
            except tarfile.FilterError as exc:
                # A symlink (or hard link) that leaves the tree: building or reading through
                # it would reach files of the machine that runs deploytools.
                raise CheckFailed(
                    f"the tree of {ref.removeprefix('refs/tags/')} holds a link that leaves "
                    f"it: {exc}",
                    untouched="nothing was built, read or changed",
                    hint="replace the link with the file, or point it inside the repository",
                    facts={"ref": ref, "error": str(exc)},
                ) from None
        archive.unlink()
        yield tree


def check_tag_format(version: Version, target_env: str, *, guarded: bool = False) -> CheckResult:
    """A pre-release may go to staging, never to production (nor to any environment whose
    deploys need approval: `guarded`)."""
    if version.prerelease and (target_env == PRODUCTION or guarded):
        return check_failed(
            "tag-format",
            f"{version.tag} is a pre-release: it may go to staging, never to {target_env}",
        )
    return check_passed("tag-format", f"{version.tag} is a release tag for {target_env}")


def check_annotated(root: Path, tag: str, runner: GitRunner) -> CheckResult:
    kind = runner(git.object_type(root, git.tag_ref(tag))).stdout.strip()
    if kind == "tag":
        return check_passed("tag-annotated", f"{tag} is an annotated tag")
    return check_failed(
        "tag-annotated",
        f"{tag} is a lightweight tag (points at a {kind or 'missing object'}); "
        f"recreate it with `git tag -a {tag}`",
    )


def check_on_release_branch(
    root: Path, tag: str, commit: str, remote: str, branch: str, runner: GitRunner
) -> CheckResult:
    tracking = f"refs/remotes/{remote}/{branch}"
    if runner(git.commit_of(root, tracking)).returncode != 0:
        return check_failed(
            "tag-on-release-branch",
            f"{remote}/{branch} is not known in this clone; fetch it (git fetch {remote})",
        )
    done = runner(git.is_ancestor(root, commit, tracking))
    if done.returncode == 0:
        return check_passed(
            "tag-on-release-branch", f"{tag} ({commit[:12]}) is on {remote}/{branch}"
        )
    return check_failed(
        "tag-on-release-branch",
        f"{tag} ({commit[:12]}) is not reachable from {remote}/{branch}: "
        "release only commits that are merged and pushed",
    )


def check_signed(root: Path, tag: str, required: bool, runner: GitRunner) -> CheckResult:
    if not required:
        return check_skipped("tag-signed", "not required (release.require_signed_tag = false)")
    done = runner(git.verify_tag(root, git.tag_ref(tag)))
    if done.returncode == 0:
        return check_passed("tag-signed", f"{tag} carries a good signature")
    detail = (done.stderr.strip().splitlines() or ["no signature"])[-1]
    return check_failed("tag-signed", f"{tag} has no valid signature: {detail}")


def check_version_file(
    root: Path, tag: str, version: Version, source_dir: str, runner: GitRunner
) -> CheckResult:
    path = _in_source(source_dir, "VERSION")
    done = runner(git.show_file(root, git.tag_ref(tag), path))
    if done.returncode != 0:
        return check_failed("version-file", f"{path} does not exist at {tag}")
    found = done.stdout.strip()
    if found == str(version):
        return check_passed("version-file", f"{path} at {tag} says {found}")
    # A byte-order mark or a zero-width character prints as nothing: "says 1.15.3, the tag
    # 1.15.3" would read as a contradiction. Name them instead.
    hidden = invisibles(found)
    if hidden:
        return check_failed(
            "version-file",
            f"{path} at {tag} says {visible(found)}: it holds {', '.join(hidden)}, "
            f"invisible but not part of a version; save it as the plain text {version}",
        )
    return check_failed(
        "version-file", f"{path} at {tag} says {found or '(empty)'}, the tag {version}"
    )


def check_clean_tree(root: Path, runner: GitRunner) -> CheckResult:
    lines = runner(git.status_porcelain(root)).stdout.splitlines()
    if not lines:
        return check_passed("work-tree-clean", "no uncommitted or untracked files")
    shown = ", ".join(line[3:] for line in lines[:5]) + (" ..." if len(lines) > 5 else "")
    return check_failed(
        "work-tree-clean", f"{len(lines)} uncommitted or untracked file(s): {shown}"
    )


def check_nothing_unpushed(root: Path, runner: GitRunner) -> CheckResult:
    lines = runner(git.unpushed_commits(root)).stdout.splitlines()
    if not lines:
        return check_passed("nothing-unpushed", "every local commit is on a remote")
    return check_failed(
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
                return check_passed("release-notes", f"{path} at {tag}")
            return check_failed("release-notes", f"{path} at {tag} is empty")
    for directory in dict.fromkeys([source_dir, "."]):
        path = _in_source(directory, "CHANGELOG.md")
        done = runner(git.show_file(root, ref, path))
        if done.returncode != 0:
            continue
        section = changelog_section(done.stdout, version)
        if section is None:
            continue
        if section.strip():
            return check_passed("release-notes", f"{path} at {tag} has a section for {version}")
        return check_failed("release-notes", f"the section for {version} in {path} is empty")
    return check_failed(
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
        return check_passed("version-higher", f"{version} is the first release")
    last = max(others)
    if version > last:
        return check_passed("version-higher", f"{version} is higher than the last release {last}")
    if allow_downgrade:
        return check_passed(
            "version-higher", f"{version} is not higher than {last}; allowed by --allow-downgrade"
        )
    return check_failed(
        "version-higher",
        f"{version} is not higher than the last release {last} (use --allow-downgrade on purpose)",
    )


def resolve_baseline(
    ctx: StepContext,
    *,
    root: Path,
    previous: Version | None,
    source_dir: str,
    since_revision: str | None,
    runner: GitRunner,
    known: frozenset[str] = frozenset(),
    production: Callable[[StepContext, frozenset[str]], Baseline] = production_baseline,
) -> Baseline:
    """Where the lint of a release starts (see `migration_check`): `since_revision`, else the
    previous release's head, else (a first release) production's database revision, when it
    is one of `known` (the release's own revisions)."""
    if since_revision:
        return Baseline(since_revision, "--since-revision")
    if previous is None:
        return production(ctx, known)
    with extracted(root, git.tag_ref(previous.tag), runner) as tree:
        source = tree / source_dir
        return previous_head(
            source if source.is_dir() else None, previous, ctx.config.release.alembic_ini
        )


def release_image(ctx: StepContext, version: Version, commit: str) -> tuple[Engine, str] | None:
    """The image of this release (`image_repository:VERSION` built from `commit`) on the local
    engine, or None when there is none (or no engine to ask)."""
    reference = f"{ctx.config.project.image_repository}:{version}"
    try:
        engine = connect("")
        image = engine.find_image(reference)
    except (EngineError, DeployError):
        return None
    if image is None or image.labels.get(REVISION_LABEL) != commit:
        return None
    return engine, reference


def check_migrations(
    ctx: StepContext,
    root: Path,
    tag: str,
    previous: Version | None,
    source_dir: str,
    runner: GitRunner,
    *,
    commit: str = "",
    since_revision: str | None = None,
    image_of: Callable[[StepContext, Version, str], tuple[Engine, str] | None] = release_image,
) -> MigrationChecks:
    """One Alembic head at `tag` (read from its tree as text); the lint of the SQL of the
    migrations since the baseline, in the release's image when one exists, else announced for
    the build (nothing of the tag runs in deploytools' own interpreter)."""
    alembic_ini = ctx.config.release.alembic_ini
    version = Version.parse(tag)
    with extracted(root, git.tag_ref(tag), runner) as tree:
        source = tree / source_dir
        try:
            revisions = read_revisions(source, alembic_ini)
        except DeployError as exc:
            return MigrationChecks(
                check_failed("alembic-single-head", f"{exc.message} at {tag}"),
                check_skipped("migration-lint", "the migrations could not be read"),
                None,
                (),
            )
        heads = revisions.heads
        if len(heads) != 1:
            return MigrationChecks(
                check_failed(
                    "alembic-single-head",
                    f"{len(heads)} Alembic heads at {tag} ({', '.join(heads) or 'none'}); merge "
                    "them (alembic merge) so that upgrade head has one meaning",
                ),
                check_skipped("migration-lint", "needs exactly one Alembic head"),
                None,
                (),
            )
        heads_ok = check_passed("alembic-single-head", f"one Alembic head at {tag}: {heads[0]}")
        try:
            baseline = resolve_baseline(
                ctx,
                root=root,
                previous=previous,
                source_dir=source_dir,
                since_revision=since_revision,
                runner=runner,
                known=frozenset(revisions.files),
            )
        except DeployError as exc:
            return MigrationChecks(heads_ok, check_failed("migration-lint", exc.message), None, ())
        found = image_of(ctx, version, commit) if version is not None else None
        if found is None:
            return MigrationChecks(
                heads_ok,
                check_skipped(
                    "migration-lint",
                    f"runs at the build step (deploytools image build), in the release's image, "
                    f"from {baseline.describe()}: no image of {tag} on this engine yet",
                ),
                None,
                (),
                lint_at="build",
            )
        engine, reference = found
        try:
            lint = lint_image(
                engine,
                reference,
                config=ctx.config,
                revisions=revisions,
                baseline=baseline,
                progress=ctx.progress,
            )
        except DeployError as exc:
            return MigrationChecks(heads_ok, check_failed("migration-lint", exc.message), None, ())
    return lint.checks(f"image {reference}")
