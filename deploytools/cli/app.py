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

import importlib
import json
import math
import os
import traceback
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from deploytools import __version__
from deploytools.config import DEFAULT_CONFIG_FILE, Config, load_config
from deploytools.errors import DeployError, ExitCode
from deploytools.jsonable import jsonable
from deploytools.redaction import redact, redact_text, secret_names, secret_values
from deploytools.visible import visible

# For annotations only: imported at the top, they would load the steps and the engine for
# `deploytools --help` (start-up time; see COMMANDS).
if TYPE_CHECKING:
    from deploytools.context import StepContext
    from deploytools.pipeline.walker import PipelineSteps


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
        # Imported here: the context brings the engine, which `--help` never needs (start-up).
        from deploytools.context import StepContext

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


def _plain(value: Any) -> Any:
    """JSON's own values only. NaN and Infinity (a statistic of no samples) become null; what
    JSON cannot hold (a datetime, bytes in an error's facts) becomes its text, so that --json
    still prints its one object."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _json_document(document: dict[str, Any], secrets: Sequence[str]) -> str:
    # Plain first, then masked: a secret inside bytes or an exception is masked as text too.
    safe = redact(_plain(jsonable(document)), secrets)
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

#: Every command of the group: the module that defines it, and its summary as
#: `deploytools --help` lists it (the first sentence of its docstring). A command's module is
#: imported when that command runs or shows its help, never all of them for `deploytools
#: --help` (start-up time: they bring the steps, the engine and their libraries).
#: tests/unit/test_cold_start.py fails when a summary differs from the command's own, or a
#: command module is missing here.
COMMANDS: dict[str, tuple[str, str]] = {
    "backup": (
        "deploytools.cli.backup_cmd",
        "Back up, verify and restore an environment's database (runbook step 4).",
    ),
    "config": ("deploytools.cli.config_cmd", "Inspect the configuration (deploy.toml)."),
    "deploy": (
        "deploytools.cli.deploy_cmd",
        "Deploy IMAGE: lock, verified backup, stop, migrate, start, wait healthy, record.",
    ),
    "history": (
        "deploytools.cli.deploy_cmd",
        "The environment's releases (deploys, rollbacks, migrations), newest first, with the "
        "backups and the lock.",
    ),
    "image": (
        "deploytools.cli.image_cmd",
        "The release's image: built once from the tag, verified before each deploy.",
    ),
    "init": (
        "deploytools.cli.init_cmd",
        "Write a deploy.toml (and the GitHub workflows) for the Compose project in --dir.",
    ),
    "lock": ("deploytools.cli.backup_cmd", "Show or break an environment's deploy lock."),
    "migrate": (
        "deploytools.cli.deploy_cmd",
        "Run IMAGE's migrations in a one-off container on the stack's network.",
    ),
    "migrations": (
        "deploytools.cli.migrations_cmd",
        "Lint migration SQL by hand, with the rules release verify applies to a release.",
    ),
    "monitor": (
        "deploytools.cli.checks_cmd",
        "Runbook step 7: watch the service's metrics, its containers' CPU and memory, and the "
        "monitor probes; a breach counts only when it persists (see [checks.monitor]).",
    ),
    "notify": (
        "deploytools.cli.notify_cmd",
        "Post EVENT (maintenance-window, success, failure, rollback) to the Slack incoming "
        "webhook and the status page hook whose URLs are in the environment variables "
        "[notifications] names; with a GitHub token and --release, also set the release's "
        "GitHub Deployment in the environment (in_progress, success, failure, inactive).",
    ),
    "pipeline": (
        "deploytools.cli.pipeline_cmd",
        "The whole release runbook in one command (pipeline/runbook.py's steps, in order).",
    ),
    "proxy": (
        "deploytools.cli.proxy_cmd",
        "deploytools' own reverse proxy (HAProxy) in front of the app: rolling deploys switch it.",
    ),
    "release": (
        "deploytools.cli.release_cmd",
        "The release tag: verify it before anything is built or deployed.",
    ),
    "report": (
        "deploytools.cli.report_cmd",
        "The runbook document of a release with its real values: the verification summary, "
        "each step's status and duration, the success metrics (target, measured, status), the "
        "backup, the exact rollback command, and the deployment log.",
    ),
    "rollback": (
        "deploytools.cli.deploy_cmd",
        "Go back to the previous (or the named) release and wait until it is healthy.",
    ),
    "smoke": (
        "deploytools.cli.checks_cmd",
        "Runbook step 2: the fast smoke tests (health, database, login, RBAC, a short latency "
        "test).",
    ),
    "status": (
        "deploytools.cli.status_cmd",
        "Show what runs in an environment: services, image and digest, version, health, since "
        "when.",
    ),
    "validate": (
        "deploytools.cli.checks_cmd",
        "Runbook step 3: all of staging validation: admin workflows, the end-to-end user flow, "
        "RBAC, error shapes, the latency test, the migration revision, the log scan and, with "
        "--previous-image, backward compatibility.",
    ),
    "verify": (
        "deploytools.cli.checks_cmd",
        "Runbook step 6: post-deployment verification: health, database and its migration "
        "revision, login, RBAC, sample endpoints, p95 latency, and no errors in the logs.",
    ),
}


class _LazyCommands(MutableMapping[str, click.Command]):
    """The group's commands, each module imported when one of its commands is first asked for
    by name; listing them all (iterating) imports them all. Importing a module registers its
    commands here (`@cli.command` sets an item)."""

    def __init__(self, modules: Mapping[str, str]) -> None:
        self._modules = dict(modules)
        self._commands: dict[str, click.Command] = {}

    def _load(self, name: object) -> None:
        module = self._modules.get(name) if isinstance(name, str) else None
        if module is not None and name not in self._commands:
            importlib.import_module(module)

    def loaded(self, name: str) -> bool:
        return name in self._commands

    def loaded_names(self) -> list[str]:
        return list(self._commands)

    def __contains__(self, name: object) -> bool:
        self._load(name)
        return name in self._commands

    def __getitem__(self, name: str) -> click.Command:
        self._load(name)
        return self._commands[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._commands[name] = command

    def __delitem__(self, name: str) -> None:
        del self._commands[name]

    def __iter__(self) -> Iterator[str]:
        for name in self._modules:
            self._load(name)
        return iter(dict(self._commands))

    def __len__(self) -> int:
        return len(list(iter(self)))


class DeployGroup(click.Group):
    """A click group that turns library errors into one line and their exit code, and loads
    each command's module only when that command is used (COMMANDS)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _LazyCommands({name: module for name, (module, _) in COMMANDS.items()})

    def list_commands(self, ctx: click.Context) -> list[str]:
        commands = self.commands
        loaded = commands.loaded_names() if isinstance(commands, _LazyCommands) else commands
        return sorted(set(COMMANDS) | set(loaded))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of `deploytools --help`, from COMMANDS for the commands not loaded
        (as click writes it from each command's docstring)."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            commands = self.commands
            if isinstance(commands, _LazyCommands) and not commands.loaded(name):
                # A stand-in command: click shortens its help exactly as it would the real one's.
                summary = click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)
            else:
                command = self.get_command(ctx, name)
                if command is None or command.hidden:
                    continue
                summary = command.get_short_help_str(limit)
            rows.append((name, summary))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
    the lock, 130 a deploy cancelled (it says what serves), 70 a bug in deploytools.
    """
    injected = ctx.obj if isinstance(ctx.obj, Injected) else Injected()
    ctx.obj = AppState(
        config_path=config_path,
        json=as_json,
        verbose=verbose,
        pipeline_steps=injected.pipeline_steps,
    )
