"""`deploytools proxy start --env E`."""

from __future__ import annotations

import click

from deploytools.cli.app import AppState, cli, emit, pass_state
from deploytools.steps import proxy_start


@cli.group("proxy")
def proxy_group() -> None:
    """deploytools' own reverse proxy (HAProxy) in front of the app: rolling deploys switch it."""


@proxy_group.command("start")
@click.option("--env", "environment", required=True, help="The environment (a key of deploy.toml).")
@pass_state
def proxy_start_cmd(state: AppState, environment: str) -> None:
    """Start the environment's proxy unless it runs, and say where it answers.

    The adoption step of a stack whose app publishes its port itself: the proxy starts on the
    port [proxy.ports] gives (another one), the app keeps its own; see docs/zero-downtime.md.
    Exits 2 when the proxy's port is the app's, 3 when the engine cannot be reached.
    """
    result = proxy_start.run(state.context(), environment=environment)

    def human() -> None:
        verb = "started" if result.started else "already runs"
        click.echo(
            f"{result.environment}: proxy {result.container} ({result.kind}, {result.image}) "
            f"{verb}, publishing {result.published or 'nothing'}; app port {result.app_port}, "
            f"health {result.health}"
        )

    emit(state, result, human)
