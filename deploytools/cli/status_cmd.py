"""`deploytools status --env E`."""

from __future__ import annotations

import click

from deploytools.cli.app import AppState, cli, emit, pass_state
from deploytools.steps import status as status_step


@cli.command("status")
@click.option("--env", "environment", required=True, help="The environment (a key of deploy.toml).")
@pass_state
def status(state: AppState, environment: str) -> None:
    """Show what runs in an environment: services, image and digest, version, health, since when.

    Exits 0 whether or not anything runs; 3 if the environment's engine cannot be reached.
    """
    result = status_step.run(state.context(), environment=environment)

    def human() -> None:
        where = f"{result.environment} ({result.compose_project} on {result.docker_host})"
        if not result.services:
            click.echo(f"{where}: nothing runs")
            return
        click.echo(f"{where}: {'healthy' if result.healthy else 'NOT healthy'}")
        for s in result.services:
            digest = s.repo_digests[0].split("@", 1)[1] if s.repo_digests else s.image_id
            on = f" on {s.node}" if s.node else ""
            click.echo(
                f"  {s.service:<10} {s.state:<8} {s.health_text:<14} "
                f"version {s.version or '?':<8} {s.image} ({digest[:19]}) since {s.started_at[:19]}"
                + on
            )
        _print_history(result)

    emit(state, result, human)


def _print_history(result: status_step.EnvironmentStatus) -> None:
    """The release, backups and lock from the environment's history (issue 5)."""
    if result.history_error:
        click.echo(f"  history: unreadable ({result.history_error})")
        return
    r = result.release
    if r is not None:
        click.echo(f"  release {r.id}: {r.image} ({r.kind} by {r.who}, {r.finished or r.started})")
    if result.kept is not None:
        k = result.kept
        memory = "?" if k.memory_mb is None else f"{k.memory_mb:.0f} MB"
        until = f"until {k.until}" + (
            " (window ended: the next deploy or monitor removes it)" if k.expired else ""
        )
        click.echo(
            f"  kept for a rollback by switch: {k.container} ({k.state}, "
            f"{k.health or 'no healthcheck'}, memory {memory}) {until}"
        )
    for manifest, ok in result.backups:
        mark = "unverified" if ok is None else ("verified" if ok else "FAILED verify")
        click.echo(f"  backup {manifest.id}: {mark}, revision {manifest.revision or '-'}")
    if result.lock is not None:
        click.echo(
            f"  LOCKED by {result.lock.holder} ({result.lock.operation}) since {result.lock.since}"
        )
