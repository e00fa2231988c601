"""`deploytools config check`."""

from __future__ import annotations

from typing import Any

import click

from deploytools.cli.app import AppState, cli, emit, pass_state
from deploytools.config import resolved_view


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration (deploy.toml)."""


@config_group.command("check")
@pass_state
def config_check(state: AppState) -> None:
    """Validate deploy.toml and print it resolved, with secrets masked.

    Every key is checked when the file is loaded: an unknown key is named with the nearest valid
    one, a wrong type with the expected one. Secrets are shown only as set or not set.
    """
    config = state.config()
    view = resolved_view(config)

    def human() -> None:
        click.echo(f"{config.path}: valid")
        _print_tree(view, indent=0, skip={"file"})

    emit(state, view, human)


def _print_tree(data: dict[str, Any], *, indent: int, skip: set[str] | None = None) -> None:
    pad = "  " * indent
    for key, value in data.items():
        if skip and key in skip:
            continue
        if isinstance(value, dict):
            if not value:
                click.echo(f"{pad}{key}: (none)")
                continue
            click.echo(f"{pad}{key}:")
            _print_tree(value, indent=indent + 1)
        elif isinstance(value, list | tuple):
            click.echo(f"{pad}{key}: {' '.join(str(v) for v in value)}")
        else:
            click.echo(f"{pad}{key}: {value}")
