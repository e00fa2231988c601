"""Start-up time: importing the command line must not load the heavy libraries that only some
commands use (the docker SDK with paramiko, requests, ghapi, boto3, cryptography), so that
`deploytools --help` and every `COMMAND --help` answer in a blink. benchmarks/cold_start.py
measures the time; this test keeps the imports out, in a fresh interpreter each time."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from deploytools.cli import app, cli
from deploytools.cli.app import COMMANDS

HEAVY = (
    "docker", "paramiko", "requests", "urllib3", "ghapi", "httpx2", "fastcore", "boto3",
    "cryptography",
)  # fmt: skip

PROBE = """
import json, sys
from click.testing import CliRunner
from deploytools.cli import cli
args = json.loads(sys.argv[1])
if args is not None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)))
"""


def loaded_after(args: list[str] | None) -> list[str]:
    """The heavy modules loaded in a fresh interpreter by importing the CLI (and running it with
    `args`, when given)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=repr(HEAVY)), json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_importing_the_cli_loads_none_of_the_heavy_libraries() -> None:
    assert loaded_after(None) == []


def help_of_every_command() -> list[list[str]]:
    found = [["--help"]]
    for name in COMMANDS:
        found.append([name, "--help"])
    for group in ("backup", "config", "image", "lock", "migrations", "pipeline", "release"):
        command = cli.commands[group]
        assert isinstance(command, click.Group)
        found += [[group, sub, "--help"] for sub in command.list_commands(click.Context(command))]
    return found


@pytest.mark.parametrize("args", help_of_every_command(), ids=" ".join)
def test_help_loads_none_of_the_heavy_libraries(args: list[str]) -> None:
    assert loaded_after(args) == []


def test_every_command_module_together_loads_none_of_them() -> None:
    probe = (
        "import importlib\nfrom deploytools.cli.app import COMMANDS\n"
        "for module, _ in COMMANDS.values(): importlib.import_module(module)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe + PROBE.format(heavy=repr(HEAVY)), "null"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(done.stdout) == []


def test_help_loads_no_command_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE_MODULES, json.dumps(["--help"])],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(done.stdout) == []


PROBE_MODULES = """
import json, sys
from click.testing import CliRunner
from deploytools.cli import cli
assert CliRunner().invoke(cli, json.loads(sys.argv[1])).exit_code == 0
heavy = ("deploytools.steps", "deploytools.cli.", "deploytools.engine")
light = ("deploytools.cli.app", "deploytools.cli.signals")
print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy) and m not in light)))
"""


def every_command_loaded() -> dict[str, click.Command]:
    for module in {module for module, _ in COMMANDS.values()}:
        importlib.import_module(module)
    return {name: cli.commands[name] for name in cli.list_commands(click.Context(cli))}


def test_the_command_table_names_every_command_with_its_own_summary() -> None:
    commands = every_command_loaded()
    assert sorted(commands) == sorted(COMMANDS)
    for name, command in commands.items():
        module, summary = COMMANDS[name]
        assert command.get_short_help_str(10_000) == summary, (
            f"app.COMMANDS[{name!r}] must hold the first sentence of its docstring"
        )
        assert sys.modules[module] is not None


def test_every_command_module_is_in_the_table() -> None:
    modules = {module for module, _ in COMMANDS.values()}
    on_disk = {
        f"deploytools.cli.{path.stem}" for path in Path(app.__file__).parent.glob("*_cmd.py")
    }
    assert on_disk == modules


def test_the_lazy_help_reads_as_the_loaded_one() -> None:
    """`deploytools --help` from the table reads exactly as with every command module loaded."""

    def help_text(first: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", f"{first}\n{PROBE_HELP}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env={**os.environ, "COLUMNS": "80"},
        )
        return done.stdout

    lazy = help_text("pass")
    loaded = help_text(
        "import importlib\nfrom deploytools.cli.app import COMMANDS\n"
        "for module, _ in COMMANDS.values(): importlib.import_module(module)"
    )
    assert "Commands:" in lazy
    assert lazy == loaded


PROBE_HELP = "from deploytools.cli import cli; cli(['--help'], prog_name='deploytools')"
