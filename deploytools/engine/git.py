"""git, run as a child process: local reads of a repository (tags, files, archives).

Argv comes from `deploytools.commands.git`; this module only runs it, with a deadline, without
prompts, in the C locale (so messages can be read), and with the environment git needs: the
allow-list plus git's and gpg's own variables (signed tags are verified with the user's keys).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Protocol

from deploytools.engine import process
from deploytools.errors import DeadlineExceeded, UsageError

GIT_TIMEOUT_S = 60.0
#: git's own variables (identity, configuration) and what verifying a signed tag needs.
GIT_PREFIXES = ("GIT_",)
GIT_NAMES = frozenset({"GNUPGHOME", "GPG_AGENT_INFO", "SSH_AUTH_SOCK"})


class GitRunner(Protocol):
    """Runs one git argv to completion (tests swap it)."""

    def __call__(self, argv: Sequence[str]) -> process.ProcessResult: ...


def git_env(parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """git's environment: the allow-list, git's and gpg's variables, never a prompt."""
    source = os.environ if parent is None else parent
    own = {k: v for k, v in source.items() if k in GIT_NAMES or k.startswith(GIT_PREFIXES)}
    return process.child_env({**own, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}, parent=source)


def run_git(argv: Sequence[str], *, timeout_s: float = GIT_TIMEOUT_S) -> process.ProcessResult:
    """Run one git argv with a deadline; git never prompts (no terminal, no askpass).

    Raises DeadlineExceeded past the deadline and UsageError when git is not installed; a
    non-zero exit is the caller's to judge."""
    try:
        return process.run(argv, env=git_env(), timeout=timeout_s)
    except process.ProcessTimedOut:
        raise DeadlineExceeded(
            f"git did not answer within {timeout_s:.0f} s: {' '.join(argv)}",
            untouched="nothing was changed",
        ) from None
    except process.ProgramNotFound:
        raise UsageError(
            "git is not installed", untouched="nothing was done", hint="install git"
        ) from None
