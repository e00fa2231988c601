"""Start-up time: importing the command line must not load the heavy libraries that only some
commands use (the docker SDK with paramiko, requests, ghapi, boto3, cryptography), so that
`deploytools --help` and every `COMMAND --help` answer in a blink. benchmarks/cold_start.py
measures the time; this test keeps the imports out, in a fresh interpreter each time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("ghapi", "boto3", "httpx2", "fastcore")

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


@pytest.mark.parametrize(
    "args",
    [["--help"], ["deploy", "--help"], ["release", "verify", "--help"], ["notify", "--help"]],
)
def test_help_loads_none_of_the_heavy_libraries(args: list[str]) -> None:
    assert loaded_after(args) == []
