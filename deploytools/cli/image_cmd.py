"""`deploytools image build --tag TAG [--push]` and `image verify IMAGE --expect-version X.Y.Z`."""

from __future__ import annotations

from pathlib import Path

import click

from deploytools.cli.app import AppState, cli, emit, pass_state, release_source_options
from deploytools.steps import image as image_step


@cli.group("image")
def image() -> None:
    """The release's image: built once from the tag, verified before each deploy."""


@image.command("build")
@release_source_options
@click.option("--push", is_flag=True, help="Push the image to project.image_repository.")
@click.option(
    "--env",
    "environment",
    default=None,
    help="Build on this environment's engine (default: local).",
)
@click.option(
    "--since-revision",
    default=None,
    metavar="REV",
    help="The Alembic revision the migration lint starts from (default: the previous release's "
    "head; for a first release, the revision production's database is at).",
)
@pass_state
def build(
    state: AppState,
    tag: str,
    repo: Path,
    source_dir: str | None,
    push: bool,
    environment: str | None,
    since_revision: str | None,
) -> None:
    """Build the service's image from the tagged source (git archive of the tag, limited by
    .dockerignore), labelled with the OCI version, revision, created and source; lint its
    migrations inside it (no network, no secrets) and label it with the verdict
    (deploytools.migrations.expand-only, .heads, .from).

    Prints the reference with its digest: the registry digest after --push, else the image ID.
    Exits 1 when the migrations fail the lint (no release image is tagged), 2 for a malformed
    or unknown tag, a path that is not a git repository or Alembic not where deploy.toml says
    (nothing is built), 3 when the engine or the registry fails.
    """
    ctx = state.context()
    if state.json:
        ctx.progress = _quiet
    built = image_step.build(
        ctx,
        tag=tag,
        repo=repo,
        source_dir=source_dir,
        push=push,
        environment=environment,
        since_revision=since_revision,
    )
    emit(state, {**built.__dict__, "pinned": built.pinned}, lambda: click.echo(built.pinned))


@image.command("verify")
@click.argument("image_ref", metavar="IMAGE")
@click.option("--expect-version", required=True, help="The release version, X.Y.Z.")
@click.option(
    "--env", "environment", default=None, help="Ask this environment's engine (default: local)."
)
@click.option(
    "--expect-digest",
    default=None,
    help="The image ID or registry digest recorded for the release (sha256:...).",
)
@click.option("--expect-revision", default=None, help="The commit the image must be built from.")
@click.option(
    "--tested-in",
    "tested_in",
    default=None,
    metavar="ENV",
    help="The environment the release passed (staging): IMAGE must have the image ID of ENV's "
    "newest succeeded deploy of --expect-version, read from ENV's release records. No such "
    "deploy fails the check, unless --expect-digest is given.",
)
@pass_state
def verify(
    state: AppState,
    image_ref: str,
    expect_version: str,
    environment: str | None,
    expect_digest: str | None,
    expect_revision: str | None,
    tested_in: str | None,
) -> None:
    """Check that IMAGE is on the engine, labelled for the release, and the recorded image.

    With --tested-in staging, the image on --env's engine must be the very image staging's
    release records say passed there (same image ID): what reaches production is what was tested.

    Exits 0 when every check passed, 1 when one failed.
    """
    report = image_step.verify(
        state.context(),
        image=image_ref,
        expect_version=expect_version,
        environment=environment,
        expect_digest=expect_digest,
        expect_revision=expect_revision,
        tested_in=tested_in,
    )

    def human() -> None:
        for check in report.checks:
            click.echo(f"{check.verdict:<7} {check.name}: {check.reason}")

    if report.ok:
        emit(state, report, human)
        return
    if not state.json:
        human()
    # Under --json the error object carries the whole report: one JSON document on stdout.
    report.raise_if_failed()


def _quiet(message: str) -> None:
    """Progress is dropped under --json."""
