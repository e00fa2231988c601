"""`deploytools image build` and `image verify`: the release's image, built once from its tag.

The build context is the tag's tree (`git archive`, never the work tree), limited by the
service's `.dockerignore`, which the docker SDK applies when it packs a directory. The image
carries the OCI labels version, revision, created and source; "created" is the tagged commit's
date, so that two builds of one tag give one image (and the layer cache serves the second).
`image verify` is what later steps use to make sure the image that passed staging is the one
that reaches production: same labels, same ID or registry digest. With `tested_in` the expected
ID comes from that environment's own release records (store/), not from the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex
from urllib.parse import urlsplit, urlunsplit

from deploytools.commands import docker_build, git
from deploytools.config import ImageConfig
from deploytools.context import StepContext
from deploytools.engine.client import Engine
from deploytools.engine.connection import connect
from deploytools.engine.errors import EngineAPIError, EngineError
from deploytools.engine.process import (
    ProcessTimedOut,
    ProgramNotFound,
    Runner,
    child_env,
    default_runner,
)
from deploytools.errors import (
    CheckFailed,
    DeadlineExceeded,
    EnvironmentUnreachable,
    ExternalCommandFailed,
    UsageError,
)
from deploytools.migration_tree import read_revisions
from deploytools.session import open_environment
from deploytools.steps.migration_check import lint_image, raise_if_failing
from deploytools.steps.release import (
    CheckList,
    CheckResult,
    GitRunner,
    Version,
    default_source_dir,
    extracted,
    parse_tag,
    previous_release,
    release_versions,
    repository_root,
    run_git,
    tag_commit,
)
from deploytools.steps.release_source import resolve_baseline
from deploytools.store.records import ReleaseRecord
from deploytools.target import REVISION_LABEL, VERSION_LABEL

CREATED_LABEL = "org.opencontainers.image.created"
SOURCE_LABEL = "org.opencontainers.image.source"
BUILD_TIMEOUT_S = 1800.0
PUSH_TIMEOUT_S = 600.0
#: How long the engine may stay silent during a build step (apt-get on a slow mirror) or a push.
QUIET_READ_TIMEOUT_S = 600


@dataclass(frozen=True)
class BuiltImage:
    """An image built from a release tag."""

    reference: str  # repository:version
    image_id: str  # sha256:... (the config digest: the same on every engine that has the image)
    repository_digest: str | None  # repository@sha256:... once pushed
    version: str
    revision: str
    labels: Mapping[str, str]
    pushed: bool

    @property
    def pinned(self) -> str:
        """The reference with its digest: the registry's when pushed, else the image ID."""
        if self.repository_digest:
            return f"{self.reference}@{self.repository_digest.split('@', 1)[1]}"
        return f"{self.reference}@{self.image_id}"


@dataclass(frozen=True)
class ImageReport(CheckList):
    """What `image verify` found about one image on one engine."""

    image: str
    engine: str
    image_id: str | None
    repo_digests: tuple[str, ...]
    labels: Mapping[str, str]
    checks: tuple[CheckResult, ...]

    def raise_if_failed(self) -> None:
        if self.failed:
            names = [c.name for c in self.failed]
            hint = "deploy the image built from the release tag (deploytools image build)"
            if TESTED_CHECK in names:
                hint = (
                    "deploy the image that passed the tested-in environment (its ID is in "
                    "`deploytools history --env ENV`), or deploy this one there first"
                )
            raise CheckFailed(
                f"image {self.image} failed {len(self.failed)} check(s) on {self.engine}: "
                + ", ".join(names),
                untouched="nothing was deployed",
                hint=hint,
                facts={
                    "image": self.image,
                    "failed": [c.name for c in self.failed],
                    "report": dataclasses.asdict(self),
                },
            )


def _engine(ctx: StepContext, environment: str | None) -> tuple[Engine, str]:
    if environment:
        # On a Swarm environment: its manager's engine (docker_host).
        return ctx.platform(environment).engine, f"environment {environment}"
    return connect(""), "the local engine"


def _public_url(url: str) -> str:
    """A remote's URL without credentials (an https remote may carry a token)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def image_source(ctx: StepContext, root: Path, runner: GitRunner) -> str:
    """The OCI source label: the GitHub repository when configured, else the remote's URL."""
    if ctx.config.github.repository:
        return f"https://github.com/{ctx.config.github.repository}"
    done = runner(git.remote_url(root, ctx.config.project.remote))
    return _public_url(done.stdout.strip()) if done.returncode == 0 else ""


def build(
    ctx: StepContext,
    *,
    tag: str,
    repo: Path,
    source_dir: str | None = None,
    push: bool = False,
    environment: str | None = None,
    since_revision: str | None = None,
    timeout_s: float = BUILD_TIMEOUT_S,
    runner: GitRunner = run_git,
    clock: Callable[[], float] = time.monotonic,
    environ: Mapping[str, str] | None = None,
    process_runner: Runner = default_runner,
) -> BuiltImage:
    """Build the image of release `tag` from its tagged source, lint its migrations inside it
    (`steps.migration_check`) and label it with the verdict; push it when asked.

    The Dockerfile, its target stage, extra build args and build secrets are deploy.toml's
    [image]; a build with secrets runs through BuildKit (`docker build`), others through the
    engine's API.

    :param ctx: the step context (configuration, progress).
    :param tag: the release tag, `vMAJOR.MINOR.PATCH[-PRERELEASE]`.
    :param repo: a path inside the release's git work tree.
    :param source_dir: the service's directory (with its Dockerfile) in the repository, relative
        to its root; None: as `release verify` decides (see `default_source_dir`).
    :param push: push `project.image_repository:VERSION` after the build.
    :param environment: build on this environment's engine; None: the local engine.
    :param since_revision: the revision the migration lint starts from; None: the previous
        release's head, or for a first release the revision production's database is at.
    :param timeout_s: the deadline for the whole build.
    :param environ: where build secrets are read from (default: os.environ).
    :param process_runner: runs the BuildKit build (a build with secrets).
    :raises UsageError: a malformed or unknown tag, a path that is not a git repository, no
        Dockerfile at the tag, an unset build secret (nothing is built then); Alembic not where
        deploy.toml says.
    :raises CheckFailed: the migrations fail the lint, have several heads, or misbehave in
        the render (no release image is tagged then).
    """
    version = parse_tag(tag)
    root = repository_root(repo, runner)
    commit = tag_commit(root, tag, runner)
    source = source_dir if source_dir is not None else default_source_dir(ctx, root)
    created = runner(git.tag_date(root, git.tag_ref(tag))).stdout.strip()
    labels = {
        VERSION_LABEL: str(version),
        REVISION_LABEL: commit,
        CREATED_LABEL: created,
        SOURCE_LABEL: image_source(ctx, root, runner),
    }
    repository = ctx.config.project.image_repository
    reference = f"{repository}:{version}"
    client, engine = _engine(ctx, environment)
    deadline = clock() + timeout_s
    # Built under a tag of its own first: the release's tag goes only to the image that passed
    # the migration lint and carries its verdict.
    unlinted = f"{repository}:unlinted-{token_hex(4)}"
    settings = ctx.config.image
    environ = os.environ if environ is None else environ
    secret_values = build_secret_values(settings.secrets, environ)
    with extracted(root, git.tag_ref(tag), runner) as tree:
        context_dir = tree / source
        if not (context_dir / settings.dockerfile).is_file():
            raise UsageError(
                f"no {settings.dockerfile} in {source} at {tag}",
                untouched="nothing was built",
                hint="pass --source-dir with the service's directory in the repository, or set "
                "image.dockerfile in deploy.toml to the Dockerfile's path inside it",
                facts={"tag": tag, "source_dir": source, "dockerfile": settings.dockerfile},
            )
        # Read before anything is built: a wrong release.alembic_ini stops here.
        revisions = read_revisions(context_dir, ctx.config.release.alembic_ini)
        baseline = resolve_baseline(
            ctx,
            root=root,
            previous=previous_release(release_versions(root, runner), version),
            source_dir=source,
            since_revision=since_revision,
            runner=runner,
            known=frozenset(revisions.files),
        )
        stage = f" (stage {settings.target})" if settings.target else ""
        ctx.progress(f"building {reference}{stage} from {tag} ({commit[:12]}) on {engine}")
        if settings.secrets:
            docker_host = ctx.config.environment(environment).docker_host if environment else ""
            image_id = _run_buildkit(
                context_dir,
                reference=reference,
                tag=unlinted,
                labels=labels,
                secret_values=secret_values,
                docker_host=docker_host,
                timeout_s=timeout_s,
                settings=settings,
                process_runner=process_runner,
            )
        else:
            image_id = _run_build(
                client,
                context_dir,
                reference=reference,
                tag=unlinted,
                labels=labels,
                buildargs=build_args(settings, labels),
                dockerfile=settings.dockerfile,
                target=settings.target,
                timeout_s=timeout_s,
                progress=ctx.progress,
                clock=clock,
            )
    try:
        lint = lint_image(
            client,
            image_id,
            config=ctx.config,
            revisions=revisions,
            baseline=baseline,
            progress=ctx.progress,
        )
        raise_if_failing(lint, untouched="no release image was tagged")
        kind = "expand-only" if lint.result.expand_only else "NOT expand-only"
        ctx.progress(
            f"migration lint: {len(lint.result.revisions)} migration(s) since "
            f"{baseline.describe()}: {kind}; labelling the image"
        )
        labels = {**labels, **lint.labels}
        image_id = _label(
            client, unlinted, reference, lint.labels, deadline - clock(), ctx.progress, clock
        )
    finally:
        with contextlib.suppress(EngineError):
            # The release's image, when labelled, is a child of this one: only the tag goes.
            client.remove_image(unlinted)
    image = client.image(image_id)
    found = image.labels
    wrong = {k: found.get(k) for k, v in labels.items() if found.get(k) != v}
    if wrong:
        raise ExternalCommandFailed(
            f"the image built for {tag} carries the wrong labels: {wrong}",
            untouched="the image stays on the engine, untagged as a release",
            hint="check that the Dockerfile does not override the org.opencontainers labels",
            facts={"expected": labels, "found": dict(found)},
        )
    built = BuiltImage(
        reference=reference,
        image_id=image.id,
        repository_digest=None,
        version=str(version),
        revision=commit,
        labels=labels,
        pushed=False,
    )
    if not push:
        return built
    digest = _push(client, repository, str(version), built, progress=ctx.progress)
    return BuiltImage(**{**built.__dict__, "repository_digest": digest, "pushed": True})


def _label(
    client: Engine,
    unlinted: str,
    reference: str,
    labels: Mapping[str, str],
    timeout_s: float,
    progress: Callable[[str], None],
    clock: Callable[[], float],
) -> str:
    """`reference`: the image `unlinted` with `labels` added (a build of FROM + labels: one
    more image config, no new layer); its ID."""
    with tempfile.TemporaryDirectory(prefix="deploytools-label-") as tmp:
        (Path(tmp) / "Dockerfile").write_text(f"FROM {unlinted}\n", encoding="utf-8")
        return _run_build(
            client,
            Path(tmp),
            reference=reference,
            labels=labels,
            buildargs={},
            timeout_s=max(timeout_s, 1.0),
            progress=progress,
            clock=clock,
        )


def _run_build(
    client: Engine,
    context_dir: Path,
    *,
    reference: str,
    labels: Mapping[str, str],
    timeout_s: float,
    progress: Callable[[str], None],
    clock: Callable[[], float],
    buildargs: Mapping[str, str],
    tag: str | None = None,
    dockerfile: str = "Dockerfile",
    target: str = "",
) -> str:
    """One build through the engine's API, its output streamed to `progress`; the image ID.
    The image is tagged `tag` (default `reference`)."""
    # images.build() returns only when the build is over; the low-level API streams its lines.
    deadline = clock() + timeout_s
    image_id = ""
    tail: list[str] = []
    try:
        stream = client.build(
            str(context_dir),
            tag=tag or reference,
            buildargs=buildargs,
            labels=labels,
            read_timeout_s=QUIET_READ_TIMEOUT_S,
            dockerfile=dockerfile,
            target=target,
        )
        for chunk in stream:
            if "error" in chunk:
                raise ExternalCommandFailed(
                    f"docker build of {reference} failed: {str(chunk['error']).strip()}",
                    untouched="no release image was tagged",
                    hint="read the build output above; the Dockerfile is in the tagged source",
                    facts={"reference": reference, "log_tail": tail[-30:]},
                )
            line = str(chunk.get("stream", "")).rstrip()
            if line:
                tail.append(line)
                progress(line)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
            if clock() > deadline:
                raise DeadlineExceeded(
                    f"the build of {reference} took longer than {timeout_s:.0f} s",
                    untouched="no release image was tagged",
                    facts={"reference": reference},
                )
    except EngineError as exc:
        raise EnvironmentUnreachable(
            f"the engine failed the build of {reference}: {exc}",
            untouched="no release image was tagged",
            facts={"reference": reference},
        ) from None
    if not image_id:
        # Old engines announce the ID only in a "Successfully built ID" line.
        for line in reversed(tail):
            if line.startswith("Successfully built "):
                image_id = line.split()[-1]
                break
    if not image_id:
        raise ExternalCommandFailed(
            f"docker build of {reference} ended without an image",
            untouched="no release image was tagged",
            facts={"log_tail": tail[-30:]},
        )
    return image_id


def build_args(settings: ImageConfig, labels: Mapping[str, str]) -> dict[str, str]:
    """The build args: deploy.toml's, then the four the OCI labels come from (which win)."""
    return {
        **settings.build_args,
        "VERSION": labels[VERSION_LABEL],
        "REVISION": labels[REVISION_LABEL],
        "CREATED": labels[CREATED_LABEL],
        "SOURCE": labels[SOURCE_LABEL],
    }


def build_secret_values(secrets: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Each build secret's variable and value; an unset or empty one is a usage error, before
    anything is built."""
    missing = sorted(v for v in secrets.values() if not environ.get(v))
    if missing:
        raise UsageError(
            f"the build secret variable(s) {', '.join(missing)} are not set",
            untouched="nothing was built",
            hint="export them (in GitHub Actions: from the environment's secrets), as "
            "deploy.toml's [image] secrets names them",
            facts={"missing": missing},
        )
    return {variable: environ[variable] for variable in secrets.values()}


def _run_buildkit(
    context_dir: Path,
    *,
    reference: str,
    labels: Mapping[str, str],
    secret_values: Mapping[str, str],
    docker_host: str,
    timeout_s: float,
    settings: ImageConfig,
    process_runner: Runner,
    tag: str | None = None,
) -> str:
    """One BuildKit build through the docker client (build secrets need it); the image ID. The
    image is tagged `tag` (default `reference`)."""
    iidfile = context_dir.parent / f".deploytools-iid-{os.getpid()}"
    argv = docker_build.buildkit_build(
        str(context_dir),
        tag=tag or reference,
        dockerfile=settings.dockerfile,
        target=settings.target,
        buildargs=build_args(settings, labels),
        labels=labels,
        secrets=settings.secrets,
        iidfile=str(iidfile),
    )
    extra = {"DOCKER_BUILDKIT": "1", **secret_values}
    if docker_host:
        extra["DOCKER_HOST"] = docker_host
    try:
        done = process_runner(argv, env=child_env(extra, engine=True), timeout=timeout_s)
    except ProcessTimedOut:
        raise DeadlineExceeded(
            f"the build of {reference} took longer than {timeout_s:.0f} s",
            untouched="no release image was tagged",
            facts={"reference": reference},
        ) from None
    except ProgramNotFound:
        raise UsageError(
            "a build with build secrets needs the docker client with BuildKit (buildx), and "
            "docker is not installed",
            untouched="nothing was built",
            hint="install the docker client and its buildx plugin, or remove [image] secrets",
        ) from None
    if done.returncode != 0:
        raise ExternalCommandFailed(
            f"docker build (BuildKit) of {reference} failed: {done.last_line()}",
            untouched="no release image was tagged",
            hint="a build with secrets needs BuildKit: the docker client's buildx plugin",
            facts={"reference": reference, "log_tail": done.stderr.splitlines()[-30:]},
        )
    try:
        return iidfile.read_text(encoding="utf-8").strip()
    except OSError:
        raise ExternalCommandFailed(
            f"docker build (BuildKit) of {reference} ended without an image ID",
            untouched="no release image was tagged",
            facts={"reference": reference},
        ) from None


def _push(
    client: Engine,
    repository: str,
    version: str,
    built: BuiltImage,
    *,
    progress: Callable[[str], None],
) -> str:
    """Push `repository:version`; the registry's `repository@sha256:...`."""
    registry = repository.split("/", 1)[0] if "/" in repository else "docker.io"
    left = (
        f"the image was built and stays on the engine as {built.reference} ({built.image_id}); "
        "nothing was pushed"
    )
    progress(f"pushing {built.reference} to {registry}")
    digest = ""
    try:
        # A push may stay silent longer than the client's connect-sized timeout allows.
        for chunk in client.push(repository, version, read_timeout_s=PUSH_TIMEOUT_S):
            if "error" in chunk:
                detail = str(chunk.get("error", "")).strip()
                raise EnvironmentUnreachable(
                    f"cannot push {built.reference} to registry {registry}: {detail}",
                    untouched=left,
                    hint="check that the registry answers and that you are logged in "
                    "(docker login), then run image build --push again",
                    facts={"registry": registry, "reference": built.reference},
                )
            status = str(chunk.get("status", "")).strip()
            if status and "id" not in chunk:
                progress(status)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
    except EngineError as exc:
        raise EnvironmentUnreachable(
            f"cannot push {built.reference} to registry {registry}: {exc}",
            untouched=left,
            hint="check that the registry answers and that you are logged in (docker login)",
            facts={"registry": registry, "reference": built.reference},
        ) from None
    if not digest:
        raise EnvironmentUnreachable(
            f"the registry {registry} did not report a digest for {built.reference}",
            untouched=left,
            facts={"registry": registry},
        )
    return f"{repository}@{digest}"


# -- image verify --------------------------------------------------------------------------------


def _digest_of(value: str) -> str:
    """`sha256:...` from an image ID, a digest or `repo@sha256:...`."""
    return value.rsplit("@", 1)[-1]


TESTED_CHECK = "image-tested"


def tested_record(records: Sequence[ReleaseRecord], version: str) -> ReleaseRecord | None:
    """The newest deploy of `version` that succeeded, from a history's records (oldest first)."""
    deployed = [r for r in records if r.serving and r.kind == "deploy" and r.version == version]
    return deployed[-1] if deployed else None


def _registry_digest(reference: str) -> str | None:
    """`sha256:...` when a recorded reference is pinned by registry digest (repo@sha256:...)."""
    name, at, digest = reference.rpartition("@")
    return digest if at and name and digest.startswith("sha256:") else None


def tested_check(
    *,
    image_id: str,
    repo_digests: Sequence[str],
    record: ReleaseRecord | None,
    version: str,
    tested_in: str,
    digest_given: bool,
) -> CheckResult:
    """Whether the image (`image_id`, `repo_digests`) is the one `record` deployed to
    `tested_in`: the same image ID, or, for a record without one, the same registry digest.

    No record of the version is a failure (the release never passed `tested_in`), unless an
    explicit digest was given to check against instead (`digest_given`).
    """
    if record is None:
        if digest_given:
            return CheckResult(
                TESTED_CHECK,
                "skipped",
                f"{version} was never deployed to {tested_in}; checked against --expect-digest",
            )
        return CheckResult(
            TESTED_CHECK,
            "failed",
            f"{version} was never deployed to {tested_in} (no succeeded deploy of it in "
            f"{tested_in}'s history)",
        )
    where = f"the image deploy {record.id} of {version} ran in {tested_in}"
    if record.image_id:
        if _digest_of(image_id) == _digest_of(record.image_id):
            return CheckResult(TESTED_CHECK, "passed", f"is {record.image_id}, {where}")
        return CheckResult(
            TESTED_CHECK,
            "failed",
            f"is {image_id}, not {record.image_id}, {where}: a different image",
        )
    # Records always carry the ID; one written without it still names its image by reference.
    digest = _registry_digest(record.image)
    if digest is None:
        return CheckResult(
            TESTED_CHECK,
            "failed",
            f"deploy {record.id} of {tested_in} recorded no image ID or digest ({record.image})",
        )
    if digest in {_digest_of(d) for d in repo_digests}:
        return CheckResult(TESTED_CHECK, "passed", f"has digest {digest}, {where}")
    return CheckResult(
        TESTED_CHECK,
        "failed",
        f"is {image_id} without digest {digest}, {where}: a different image",
    )


def history_records(ctx: StepContext, environment: str) -> list[ReleaseRecord]:
    """An environment's release records, from the backup store on its own engine."""
    with open_environment(ctx, environment) as session:
        return session.history.releases()


def verify(
    ctx: StepContext,
    *,
    image: str,
    expect_version: str,
    environment: str | None = None,
    expect_digest: str | None = None,
    expect_revision: str | None = None,
    tested_in: str | None = None,
    records_of: Callable[[StepContext, str], Sequence[ReleaseRecord]] | None = None,
) -> ImageReport:
    """Check that `image` exists on the engine, carries the release's labels and is the image
    recorded for the release.

    :param ctx: the step context.
    :param image: the image reference (name:tag, name@sha256:..., or an image ID).
    :param expect_version: the release version the labels must name (X.Y.Z).
    :param environment: the environment whose engine is asked; None: the local engine.
    :param expect_digest: the image ID or registry digest recorded for the release; None skips
        that check.
    :param expect_revision: the commit the revision label must name; None only requires one.
    :param tested_in: the environment the release passed (staging): the image must be the one
        its newest succeeded deploy of `expect_version` ran. None skips that check.
    :param records_of: reads an environment's release records; None: `history_records`.
    """
    if Version.parse(f"v{expect_version}") is None:
        raise UsageError(
            f'--expect-version "{expect_version}" is not a version: expected X.Y.Z, for '
            "example 1.15.2 (a pre-release may add -rc.1)",
            untouched="nothing was done",
            facts={"expect_version": expect_version},
        )
    if tested_in is not None and tested_in == environment:
        raise UsageError(
            f"--tested-in {tested_in} names the environment being checked: an image is always "
            "the one it runs itself",
            untouched="nothing was done",
            hint="pass the environment the release passed before this one, e.g. staging",
            facts={"tested_in": tested_in},
        )
    client, engine = _engine(ctx, environment)
    try:
        found = client.find_image(image)
    except EngineAPIError as exc:
        raise UsageError(
            f'"{image}" is not an image reference the engine accepts: {exc.explanation or exc}',
            untouched="nothing was done",
            facts={"image": image},
        ) from None
    if found is None:
        missing = CheckResult("image-exists", "failed", f"{image} is not on {engine}")
        rest: tuple[str, ...] = ("image-labels", "image-revision", "image-digest")
        rest += (TESTED_CHECK,) if tested_in else ()
        checks = (missing, *(CheckResult(n, "skipped", "no image") for n in rest))
        return ImageReport(image, engine, None, (), {}, checks)
    labels: dict[str, str] = dict(found.labels or {})
    repo_digests = tuple(found.attrs.get("RepoDigests") or ())
    results = [CheckResult("image-exists", "passed", f"{image} is {found.id} on {engine}")]
    wrong: list[str] = []
    if labels.get(VERSION_LABEL) != expect_version:
        wrong.append(f"version is {labels.get(VERSION_LABEL) or '(none)'}, not {expect_version}")
    absent = [k.rsplit(".", 1)[1] for k in (CREATED_LABEL, SOURCE_LABEL) if not labels.get(k)]
    if absent:
        wrong.append("no " + ", ".join(absent) + " label")
    results.append(
        CheckResult("image-labels", "failed", "; ".join(wrong))
        if wrong
        else CheckResult("image-labels", "passed", f"version {expect_version}, created and source")
    )
    revision = labels.get(REVISION_LABEL, "")
    if not revision:
        results.append(CheckResult("image-revision", "failed", "no revision label"))
    elif expect_revision and revision != expect_revision:
        results.append(
            CheckResult("image-revision", "failed", f"built from {revision}, not {expect_revision}")
        )
    else:
        results.append(CheckResult("image-revision", "passed", f"built from {revision}"))
    if not expect_digest:
        results.append(CheckResult("image-digest", "skipped", "no digest recorded for the release"))
    else:
        known = {_digest_of(found.id), *(_digest_of(d) for d in repo_digests)}
        if _digest_of(expect_digest) in known:
            results.append(CheckResult("image-digest", "passed", f"is {expect_digest}"))
        else:
            results.append(
                CheckResult(
                    "image-digest",
                    "failed",
                    f"is {found.id}, not the recorded {expect_digest}: a different image",
                )
            )
    if tested_in:
        records = (records_of or history_records)(ctx, tested_in)
        record = tested_record(records, expect_version)
        results.append(
            tested_check(
                image_id=found.id,
                repo_digests=repo_digests,
                record=record,
                version=expect_version,
                tested_in=tested_in,
                digest_given=bool(expect_digest),
            )
        )
    return ImageReport(image, engine, found.id, repo_digests, labels, tuple(results))
