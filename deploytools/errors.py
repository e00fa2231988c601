"""One exception root for the whole library, and the exit code each kind of failure maps to.

The library only raises; `deploytools.cli` alone turns an error into a line on stderr (or a JSON
object) and an exit code. Every error says three things: what happened, what was left as it was,
and what to do next, so that the person paged at 2 a.m. does not need the traceback.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """The documented exit codes of `deploytools` (docs/commands.md, "Exit codes")."""

    OK = 0
    #: A check ran and found the release bad (smoke, validation, verification, lint, monitor).
    CHECK_FAILED = 1
    #: The command line or the configuration is wrong; nothing was done.
    USAGE = 2
    #: The environment could not be reached, refused an operation, or did not answer in time.
    ENVIRONMENT = 3
    #: Another deploy holds the environment's lock.
    LOCKED = 4
    #: The command was cancelled (SIGINT or SIGTERM: Ctrl-C, a cancelled CI job) and ended on
    #: its own, saying what it left (128 + SIGINT, as a shell reports it).
    CANCELLED = 130
    #: A bug in deploytools itself (an exception that is not a DeployError).
    INTERNAL = 70


class DeployError(Exception):
    """Root of every error deploytools raises on purpose.

    :param message: what happened, in one sentence.
    :param untouched: what was left as it was (for example "nothing was deployed").
    :param hint: what to do next.
    :param facts: the data behind the message, for `--json` output and for tests.
    """

    exit_code: ExitCode = ExitCode.ENVIRONMENT

    def __init__(
        self,
        message: str,
        *,
        untouched: str | None = None,
        hint: str | None = None,
        facts: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.untouched = untouched
        self.hint = hint
        self.facts: dict[str, Any] = dict(facts or {})

    def one_line(self) -> str:
        """The message, what was left untouched and the hint, as one line for a terminal."""
        parts = [self.message.rstrip(".") + "."]
        if self.untouched:
            parts.append(self.untouched[0].upper() + self.untouched[1:].rstrip(".") + ".")
        if self.hint:
            parts.append(self.hint[0].upper() + self.hint[1:].rstrip(".") + ".")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "exit_code": int(self.exit_code),
            "message": self.message,
            "untouched": self.untouched,
            "hint": self.hint,
            "facts": self.facts,
        }


class UsageError(DeployError):
    """The command line asks for something that cannot be done (bad tag, unknown environment)."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """`deploy.toml` is missing, unreadable or invalid."""


class ApprovalRequired(UsageError):
    """An environment's deploy needs a person's approval (`requires_approval`) and none was
    given: nobody could be asked (no terminal, no --yes), or the person declined."""


class CheckFailed(DeployError):
    """A check ran to the end and found the release bad."""

    exit_code = ExitCode.CHECK_FAILED


class EnvironmentUnreachable(DeployError):
    """The Docker engine (or another endpoint) of an environment does not answer."""

    exit_code = ExitCode.ENVIRONMENT


class DeadlineExceeded(DeployError):
    """A wait (health, lock, HTTP) ran past its deadline."""

    exit_code = ExitCode.ENVIRONMENT


class ExternalCommandFailed(DeployError):
    """A program deploytools ran (compose, pg_dump, git) exited with an error."""

    exit_code = ExitCode.ENVIRONMENT


class LockHeld(DeployError):
    """Another deploy holds the environment's lock."""

    exit_code = ExitCode.LOCKED


class DeployCancelled(DeployError):
    """A deploy was cancelled (SIGINT or SIGTERM) and ended on its own: its message says what
    serves now, its hint what to run next."""

    exit_code = ExitCode.CANCELLED


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code for any exception: its own for a DeployError, INTERNAL for a bug."""
    if isinstance(error, DeployError):
        return error.exit_code
    return ExitCode.INTERNAL
