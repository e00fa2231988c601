"""The `deploytools` command line: the only place that prints, prompts and exits.

`app` holds the group, the global options, output and error handling; each `*_cmd` module adds
the commands of one runbook step to it. The group imports a command's module when the command
is first used (`app.COMMANDS`), so that `deploytools --help` starts in a blink.
"""

from __future__ import annotations

from deploytools.cli.app import cli
from deploytools.cli.signals import install_signal_handlers


def main() -> None:
    # A cancelled CI job (SIGINT, then SIGTERM) releases the deploy lock on its way out.
    install_signal_handlers()
    cli(prog_name="deploytools")


__all__ = ["cli", "main"]
