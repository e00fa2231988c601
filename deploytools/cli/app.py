"""The `deploytools` command group, its global options, output and error handling.

Every command calls one library function and hands its result to `Output`, which renders it for a
person or, with `--json`, as one JSON object on stdout. Errors from the library (one root,
`DeployError`) become one clear line on stderr and their documented exit code; `-v` adds the
traceback. In GitHub Actions an error is also written as an `::error::` annotation. Under
`--json`, click's own usage errors (a missing option, an unknown one) are a JSON object too.

Nothing leaves here with a secret in it: results, progress lines, errors, their facts and
tracebacks pass through `deploytools.redaction` first (known secret values and URL credentials
become "***").
"""

from __future__ import annotations

import json
import math
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from deploytools import __version__
from deploytools.config import DEFAULT_CONFIG_FILE, Config, load_config
from deploytools.context import StepContext
from deploytools.errors import DeployError, ExitCode
from deploytools.jsonable import jsonable
from deploytools.pipeline.walker import PipelineSteps
from deploytools.redaction import redact, redact_text, secret_names, secret_values
from deploytools.visible import visible


@dataclass(frozen=True)
class Injected:
    """What a caller of the command group (a test, an embedding program) hands in as click's
    `obj` instead of the defaults: the step functions `pipeline run` calls."""

    pipeline_steps: PipelineSteps | None = None


@dataclass
class AppState:
    """Global options, and the configuration loaded once, when a command first needs it."""

    config_path: Path
    json: bool
    verbose: int
    #: The step functions `pipeline run` calls; None: the real ones.
    pipeline_steps: PipelineSteps | None = None
    _config: Config | None = field(default=None, repr=False)

    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def context(self) -> StepContext:
        return StepContext(config=self.config(), progress=self.progress)

    def progress(self, message: str) -> None:
        # Progress goes to stderr so that stdout stays clean for --json and for pipes.
        click.echo(redact_text(message, self.secrets()), err=True)

    def secrets(self) -> tuple[str, ...]:
        """The secret values to mask in output: those deploy.toml names (once it is loaded)
        and those of variables named like secrets."""
        return secret_values(os.environ, secret_names(self._config))


def _secrets(state: AppState | None) -> tuple[str, ...]:
    return state.secrets() if state is not None else secret_values(os.environ)


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: such a number (a statistic of no samples) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json_document(document: dict[str, Any], secrets: Sequence[str]) -> str:
    safe = _finite(redact(jsonable(document), secrets))
    return json.dumps(safe, indent=2, sort_keys=True, allow_nan=False)


def emit(state: AppState, data: Any, human: Callable[[], None]) -> None:
    """Print a command's result: `human()` for a person, or the data as JSON with `--json`."""
    if state.json:
        click.echo(_json_document({"ok": True, "result": data}, state.secrets()))
    else:
        human()


def _github_annotation(message: str) -> None:
    if os.environ.get("GITHUB_ACTIONS") == "true":
        # Workflow commands end at a newline; escape as the runner expects.
        escaped = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        # On stderr: the runner reads workflow commands there too, and stdout stays one JSON
        # document under --json.
        click.echo(f"::error title=deploytools::{escaped}", err=True)


def report_error(state: AppState | None, error: BaseException) -> ExitCode:
    """Say what went wrong, once, in the form asked for; return the exit code to use."""
    as_json = bool(state and state.json)
    verbose = bool(state and state.verbose)
    secrets = _secrets(state)
    if isinstance(error, DeployError):
        code = error.exit_code
        line = error.one_line()
        payload = error.to_dict()
    else:
        code = ExitCode.INTERNAL
        line = (
            f"internal error in deploytools: {type(error).__name__}: {error}. "
            "Run again with -v for the traceback and report it"
        )
        payload = {"type": type(error).__name__, "exit_code": int(code), "message": str(error)}
    # An error's message and facts may quote a child's output or a URL: mask secrets in them,
    # and show invisible characters so that the line stays one line.
    line = visible(redact_text(line, secrets))
    if verbose:
        trace = "".join(traceback.format_exception(error))
        click.echo(redact_text(trace, secrets), err=True, nl=False)
    if as_json:
        click.echo(_json_document({"ok": False, "error": payload}, secrets))
    click.echo(f"error: {line}", err=True)
    _github_annotation(line)
    return code


def _wants_json(args: Sequence[str]) -> bool:
    """Whether --json is on the command line (read before click has parsed it, since a usage
    error can stop the parse before --json is seen)."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def _report_usage_json(error: click.ClickException) -> None:
    """A usage error click found, as the one JSON object --json promises; click still says it
    to a person on stderr and exits with its code (2)."""
    usage = isinstance(error, click.UsageError)
    ctx = error.ctx if isinstance(error, click.UsageError) else None
    payload = {
        "type": "UsageError" if usage else type(error).__name__,
        "exit_code": int(error.exit_code),
        "message": error.format_message(),
        "untouched": "nothing was done",
        "hint": f"see {ctx.command_path if ctx else 'deploytools'} --help",
        "facts": {"usage": ctx.get_usage()} if ctx is not None else {},
    }
    click.echo(_json_document({"ok": False, "error": payload}, secret_values(os.environ)))


_JSON_META = "deploytools.json"


class DeployGroup(click.Group):
    """A click group that turns library errors into one line and their exit code."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # The global options' own usage errors (--bogus, --config naming a directory).
        as_json = _wants_json(args)
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as error:
            if as_json:
                _report_usage_json(error)
            raise
        # An unknown command is found before the group's callback makes the AppState.
        ctx.meta[_JSON_META] = as_json
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            # A command's usage error: click says it on stderr and exits 2; --json also gets it.
            state = ctx.find_object(AppState)
            if (state.json if state is not None else ctx.meta.get(_JSON_META)) is True:
                _report_usage_json(error)
            raise
        except (click.exceptions.Exit, click.Abort, BrokenPipeError):
            # click handles these itself (a closed pipe, as in `| head`, ends quietly).
            raise
        except Exception as error:  # every error must end as one line and a code
            ctx.exit(int(report_error(ctx.find_object(AppState), error)))


pass_state = click.make_pass_decorator(AppState)

_F = TypeVar("_F", bound=Callable[..., Any])

#: Where a release's source is: release verify reads it, image build builds it.
_RELEASE_SOURCE_OPTIONS = (
    click.option("--tag", required=True, help="The release tag, vMAJOR.MINOR.PATCH[-PRERELEASE]."),
    click.option(
        "--repo",
        type=click.Path(path_type=Path),
        default=".",
        show_default=True,
        help="The release's git repository (any path inside its work tree).",
    ),
    click.option(
        "--source-dir",
        default=None,
        help="The service's directory (with its VERSION, Dockerfile and migrations) inside the "
        "repository, relative to its root. Default: project.source_dir when --repo is "
        "deploy.toml's own repository, else the root.",
    ),
)


def release_source_options(command: _F) -> _F:
    """--tag, --repo and --source-dir, in that order, with one help text wherever they appear."""
    for option in reversed(_RELEASE_SOURCE_OPTIONS):
        command = option(command)
    return command


@click.group(cls=DeployGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG_FILE,
    show_default=True,
    envvar="DEPLOYTOOLS_CONFIG",
    help="The configuration file (env: DEPLOYTOOLS_CONFIG).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("-v", "--verbose", count=True, help="More detail; with an error, the traceback.")
@click.version_option(__version__, prog_name="deploytools")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, as_json: bool, verbose: int) -> None:
    """Release a Docker Compose service with PostgreSQL and Alembic, step by step.

    Each command automates one step of the release runbook; run them from a terminal or from the
    GitHub Actions workflows. Exit codes: 0 success, 1 a check found the release bad, 2 usage or
    configuration error, 3 environment unreachable, failed or timed out, 4 another deploy holds
    the lock, 70 a bug in deploytools.
    """
    injected = ctx.obj if isinstance(ctx.obj, Injected) else Injected()
    ctx.obj = AppState(
        config_path=config_path,
        json=as_json,
        verbose=verbose,
        pipeline_steps=injected.pipeline_steps,
    )
