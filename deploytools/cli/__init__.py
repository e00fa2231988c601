"""The `deploytools` command line: the only place that prints, prompts and exits.

`app` holds the group, the global options, output and error handling; each `*_cmd` module adds
the commands of one runbook step to it. Importing them here registers them.
"""

from __future__ import annotations

import deploytools.cli.backup_cmd  # registers backup, lock (issue 5)
import deploytools.cli.checks_cmd  # registers smoke, validate, verify, monitor (issue 6)
import deploytools.cli.deploy_cmd  # registers deploy, migrate, rollback, history (issue 5)
import deploytools.cli.image_cmd  # registers image build, image verify (issue 4)
import deploytools.cli.notify_cmd  # registers notify (issue 7)
import deploytools.cli.pipeline_cmd  # registers pipeline run (issue 8)
import deploytools.cli.release_cmd  # registers release verify (issue 4)
import deploytools.cli.report_cmd  # noqa: F401 - registers report (issue 7)
from deploytools.cli import config_cmd, status_cmd  # noqa: F401 - registers the commands
from deploytools.cli.app import cli
from deploytools.cli.signals import install_signal_handlers


def main() -> None:
    # A cancelled CI job (SIGINT, then SIGTERM) releases the deploy lock on its way out.
    install_signal_handlers()
    cli(prog_name="deploytools")


__all__ = ["cli", "main"]
