"""`deploytools init`: adopt deploytools in an existing Compose project."""

from __future__ import annotations

from pathlib import Path

import click

from deploytools.cli.app import AppState, cli, emit, pass_state


@cli.command("init")
@click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=".",
    show_default=True,
    help="The Compose project's root: deploy.toml and .github/workflows/ are written there.",
)
@click.option(
    "--compose-file",
    default=None,
    help="The stack's Compose file, relative to --dir. Default: the first of "
    "docker-compose.prod.yml, compose.yaml, docker-compose.yml, ... found there.",
)
@click.option("--app-service", default=None, help="The app's service (default: found).")
@click.option("--database-service", default=None, help="The PostgreSQL service (default: found).")
@click.option(
    "--workflows/--no-workflows",
    default=True,
    show_default=True,
    help="Also write the release, rollback and monitor workflows to .github/workflows/.",
)
@pass_state
def init(
    state: AppState,
    root: Path,
    compose_file: str | None,
    app_service: str | None,
    database_service: str | None,
    workflows: bool,
) -> None:
    """Write a deploy.toml (and the GitHub workflows) for the Compose project in --dir.

    Run it in the root of an existing Compose project. It finds the PostgreSQL service, the
    app's service, its image variable, port and healthcheck, the variables the Compose file
    requires (secrets), alembic.ini (for the migration command) and the Dockerfile, and writes
    deploy.toml with a staging and a production environment on the local engine. Then it lists
    what a person must still fill in: secrets, base URLs, the checks' users.

    It never overwrites: if deploy.toml or a workflow exists, it names them, writes nothing and
    exits 2. Check the result with `deploytools config check`.
    """
    # Imported here: the step brings the YAML reader, which `deploytools --help` never needs.
    from deploytools.steps.adopt import init_project

    result = init_project(
        root,
        compose_file=compose_file,
        app_service=app_service,
        database_service=database_service,
        workflows=workflows,
    )
    found = result.project

    def human() -> None:
        click.echo(
            f"found: app service {found.app_service}, database service "
            f"{found.database_service}, image variable {found.image_variable}, "
            f"alembic.ini {found.alembic_ini}, Dockerfile {found.dockerfile or 'none'}"
        )
        for name in result.written:
            click.echo(f"wrote {root / name}")
        click.echo("still to fill in:")
        for item in result.to_fill:
            click.echo(f"  - {item}")
        click.echo("then: deploytools config check")

    emit(
        state,
        {"written": list(result.written), "to_fill": list(result.to_fill), "found": found},
        human,
    )
