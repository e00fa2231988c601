"""The migration lint of a release, run in its image: heads, baseline, SQL, verdict, labels.

`image build` runs it on the image it just built and writes the verdict onto the image
(`deploytools.migrations.expand-only`, `.heads`, `.from`); `release verify` runs it when an image
of the release is already on the engine, and otherwise says it will run at the build.

The baseline (the revision the lint starts from) is, in order: `--since-revision` given by hand;
the previous release tag's head (read from its tree as text, `migration_tree`); for the first
release, the revision production's database is at (an adopted service's years of history are
not findings); else the empty database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploytools.config import Config
from deploytools.context import StepContext
from deploytools.database import Database
from deploytools.engine.client import Engine
from deploytools.engine.errors import EngineError
from deploytools.errors import CheckFailed, DeployError, UsageError
from deploytools.migration_render import (
    RenderLimits,
    image_heads,
    render_environment,
    render_sql,
)
from deploytools.migration_tree import Revisions, read_revisions
from deploytools.sql_lint import LintResult, lint_sql
from deploytools.steps.migrate import EXPAND_ONLY_LABEL
from deploytools.steps.release_report import (
    PRODUCTION,
    CheckResult,
    check_failed,
    check_passed,
)
from deploytools.steps.release_version import Version

#: The heads of the image's migrations, comma-separated (one, when the lint passed).
HEADS_LABEL = "deploytools.migrations.heads"
#: The revision the lint started from ("" for the empty database): the verdict holds from it.
FROM_LABEL = "deploytools.migrations.from"


@dataclass(frozen=True)
class Baseline:
    """The revision the lint starts from (None: the empty database), and why that one."""

    revision: str | None
    source: str

    def describe(self) -> str:
        return f"{self.revision or 'the empty database'} ({self.source})"


@dataclass(frozen=True)
class MigrationChecks:
    heads: CheckResult
    lint: CheckResult
    expand_only: bool | None
    findings: tuple[str, ...]
    #: "image REF" when the lint ran in an image, "build" when it runs at the image build.
    lint_at: str = ""


@dataclass(frozen=True)
class ImageLint:
    """The lint of one image's migrations from `baseline`."""

    image: str
    heads: tuple[str, ...]
    baseline: Baseline
    result: LintResult

    @property
    def labels(self) -> dict[str, str]:
        return {
            EXPAND_ONLY_LABEL: "true" if self.result.expand_only else "false",
            HEADS_LABEL: ",".join(self.heads),
            FROM_LABEL: self.baseline.revision or "",
        }

    def checks(self, where: str) -> MigrationChecks:
        head = self.heads[0]
        return MigrationChecks(
            check_passed("alembic-single-head", f"one Alembic head in {where}: {head}"),
            summary(self.result, self.baseline),
            self.result.expand_only,
            tuple(f.describe() for f in self.result.findings),
            lint_at=where,
        )


def summary(result: LintResult, baseline: Baseline) -> CheckResult:
    """The migration-lint check of a lint result."""
    since = f"since {baseline.describe()}"
    kind = "expand-only" if result.expand_only else "NOT expand-only"
    if not result.revisions:
        return check_passed("migration-lint", f"no migrations added {since}")
    if result.failing:
        return check_failed(
            "migration-lint",
            f"{len(result.failing)} finding(s) in {len(result.revisions)} migration(s) {since}: "
            + "; ".join(f.describe() for f in result.failing),
        )
    acked = (
        f"; acknowledged: {'; '.join(f.describe() for f in result.acknowledged)}"
        if result.acknowledged
        else ""
    )
    return check_passed(
        "migration-lint",
        f"{len(result.revisions)} migration(s) {since} ({', '.join(result.revisions)}), "
        f"{kind}{acked}",
    )


def limits_of(config: Config) -> RenderLimits:
    return RenderLimits(timeout_s=config.release.lint_timeout_s)


def alembic_base(config: Config) -> list[str]:
    base = config.release.alembic_base(config.project.migration_command)
    if base is None:
        # Not refused when deploy.toml loads: a configuration without Alembic in its migration
        # command is valid for every command but the lint.
        raise UsageError(
            '"project.migration_command" has no "upgrade" word to tell Alembic from its '
            'subcommand: set "release.alembic_command" (Alembic as the image runs it, e.g. '
            '["alembic", "-c", "/app/alembic.ini"]) for the migration lint',
            untouched="nothing was built or changed",
        )
    return base


def lint_image(
    engine: Engine,
    image: str,
    *,
    config: Config,
    revisions: Revisions,
    baseline: Baseline,
    progress: Callable[[str], None] = lambda _line: None,
) -> ImageLint:
    """Lint the migrations `image` ships, from `baseline` to its head, inside the image.

    :param engine: the engine that has `image`.
    :param image: the release image (reference or ID).
    :param config: deploy.toml (Alembic's command, lint_env, lint_timeout_s).
    :param revisions: the release's revision files, read from its tree (acknowledgements).
    :param baseline: where the lint starts.
    :raises CheckFailed: not exactly one head, or a migration that the render refuses.
    :raises UsageError: Alembic or its configuration is not where deploy.toml says.
    """
    base = alembic_base(config)
    env = render_environment(config.release.lint_env)
    limits = limits_of(config)
    progress(f"migration lint: `{' '.join(base)} heads` in {image} (no network, no secrets)")
    heads = image_heads(engine, image, base, environment=env, limits=limits)
    if len(heads) != 1:
        raise CheckFailed(
            f"{len(heads)} Alembic heads in {image} ({', '.join(heads)}): merge them "
            "(alembic merge) so that upgrade head has one meaning",
            untouched="nothing was changed",
            facts={"heads": list(heads)},
        )
    head = heads[0]
    if baseline.revision == head:
        result = LintResult(baseline.revision, head, (), (), expand_only=True)
        return ImageLint(image, heads, baseline, result)
    progress(f"migration lint: the SQL from {baseline.describe()} to {head}, rendered offline")
    sql = render_sql(
        engine,
        image,
        base,
        from_revision=baseline.revision,
        to_revision=head,
        environment=env,
        limits=limits,
    )
    context = ""
    if baseline.revision:
        # The schema the migrations start from, for the columns' types (a widening is not a
        # rewrite): the offline SQL from the empty database up to the baseline.
        context = render_sql(
            engine,
            image,
            base,
            from_revision=None,
            to_revision=baseline.revision,
            environment=env,
            limits=limits,
        )
    result = lint_sql(
        sql,
        migration_sources=revisions.texts,
        migration_files=revisions.paths,
        from_revision=baseline.revision,
        to_revision=head,
        context_sql=context,
    )
    return ImageLint(image, heads, baseline, result)


def raise_if_failing(lint: ImageLint, *, untouched: str) -> None:
    """CheckFailed when the lint has unacknowledged findings."""
    failing = lint.result.failing
    if failing:
        raise CheckFailed(
            f"the migrations of {lint.image} fail the lint: "
            + "; ".join(f.describe() for f in failing),
            untouched=untouched,
            hint="make them safe, or acknowledge a finding in its migration with "
            "`# deploytools: allow RULE REASON`",
            facts={"findings": [f.describe() for f in failing], "labels": lint.labels},
        )


def previous_head(source: Path | None, previous: Version, alembic_ini: str) -> Baseline:
    """The previous release's single head, read from its tree (`source`: the service's source
    directory extracted from `previous`'s tag, None when the tag has none)."""
    if source is None or not (source / alembic_ini).is_file():
        return Baseline(None, f"{previous.tag}, which has no {alembic_ini}")
    heads = read_revisions(source, alembic_ini).heads
    if len(heads) > 1:
        raise CheckFailed(
            f"the previous release {previous.tag} has {len(heads)} Alembic heads "
            f"({', '.join(heads)}); the migrations it lacks cannot be told apart",
            untouched="nothing was changed",
            hint="pass --since-revision with the revision production is at",
        )
    return Baseline(heads[0] if heads else None, f"the head of {previous.tag}")


def production_baseline(ctx: StepContext, known: frozenset[str] = frozenset()) -> Baseline:
    """For a first release: the revision production's database is at, when it can be read and
    is one of the release's revisions (`known`; empty: any)."""
    if PRODUCTION not in ctx.config.environments:
        return Baseline(None, "the first release, and no production environment")
    try:
        revision = Database.of(ctx.platform(PRODUCTION)).revision()
    except (DeployError, EngineError) as exc:
        why = exc.message if isinstance(exc, DeployError) else str(exc)
        return Baseline(
            None,
            f"the first release; production's database could not be read ({why}); "
            "pass --since-revision REV to start from the revision it is at",
        )
    if revision is None:
        return Baseline(None, "the first release; production's database was never migrated")
    if known and revision not in known:
        return Baseline(
            None,
            f"the first release; production's database is at {revision}, which this "
            "release does not have",
        )
    return Baseline(revision, "the first release: production's database is at it")
