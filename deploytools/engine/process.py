"""Child processes: the one place deploytools starts a program (compose, git, ssh, tools).

Every child runs without a shell, with a deadline, and with an environment built from an
allow-list (`child_env`) plus what the caller names: a Compose child gets the stack's variables
and the named secrets, ssh gets its agent, and nothing gets GITHUB_TOKEN, cloud keys or any
other secret of the runner's environment unless a step passes it explicitly.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

#: Variables every child gets from our environment, when set: what programs need to find
#: themselves, their home, their locale and a temporary directory.
BASE_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
#: Prefixes of variables every child gets: the locale (LC_ALL, LC_CTYPE, ...).
BASE_PREFIXES = ("LC_",)
#: What a child that talks to the Docker engine needs (the connection, its TLS, the client's
#: own configuration) and what ssh needs (its agent), for ssh:// engines.
ENGINE_NAMES = frozenset(
    {
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_CONFIG",
        "DOCKER_CERT_PATH",
        "DOCKER_TLS_VERIFY",
        "DOCKER_API_VERSION",
        "DOCKER_BUILDKIT",
        "DOCKER_DEFAULT_PLATFORM",
        "COMPOSE_API_VERSION",
        "SSH_AUTH_SOCK",
    }
)


def child_env(
    extra: Mapping[str, str] | None = None,
    *,
    engine: bool = False,
    parent: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a child: the allow-listed variables of `parent` (ours by default),
    the engine's connection variables when `engine` is true, then `extra` (which wins).

    :param extra: what the caller passes on purpose (a stack's variables, named secrets).
    :param engine: the child talks to the Docker engine or over ssh (compose, docker, ssh).
    :param parent: the environment to take from; `os.environ` when None.
    """
    source = os.environ if parent is None else parent
    names = BASE_NAMES | ENGINE_NAMES if engine else BASE_NAMES
    env = {
        key: value for key, value in source.items() if key in names or key.startswith(BASE_PREFIXES)
    }
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class ProcessResult:
    """What a finished child left: its argv, exit code and output (text)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def last_line(self) -> str:
        """The last line of stderr (or of stdout when stderr is empty), for error messages."""
        lines = (self.stderr or self.stdout).strip().splitlines()
        return lines[-1] if lines else "no output"


class ProcessTimedOut(Exception):
    """The child did not finish before its deadline; it was killed."""

    def __init__(self, argv: Sequence[str], timeout_s: float) -> None:
        super().__init__(f"{argv[0] if argv else 'a program'} did not finish in {timeout_s:.0f} s")
        self.argv = tuple(argv)
        self.timeout_s = timeout_s


class ProgramNotFound(Exception):
    """The program of argv[0] is not installed (not on PATH)."""

    def __init__(self, program: str) -> None:
        super().__init__(f"{program} is not installed")
        self.program = program


class Runner(Protocol):
    """Runs argv to completion; swapped by tests (pypa/build's `runner=` pattern)."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float,
        cwd: str | None = None,
    ) -> ProcessResult: ...


class InputRunner(Protocol):
    """A runner that can also feed the child's stdin (a stack file to `docker stack deploy`,
    kept out of argv and off the disk)."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float,
        cwd: str | None = None,
        input: str | None = None,
    ) -> ProcessResult: ...


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    cwd: str | None = None,
    input: str | None = None,
) -> ProcessResult:
    """Run argv (never through a shell) with exactly `env` and a deadline; capture its output.

    Raises ProcessTimedOut when the deadline passes (the child is killed) and ProgramNotFound
    when argv[0] does not exist; a non-zero exit is the caller's to judge.
    """
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            cwd=cwd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ProcessTimedOut(argv, timeout) from None
    except FileNotFoundError:
        raise ProgramNotFound(argv[0]) from None
    return ProcessResult(tuple(argv), done.returncode, done.stdout or "", done.stderr or "")


#: The default runner, under the name the `Runner` parameters of callers default to.
default_runner: Runner = run
