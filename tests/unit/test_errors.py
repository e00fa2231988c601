"""Errors map to their documented exit codes and read as one line."""

from __future__ import annotations

import pytest

from deploytools.errors import (
    CheckFailed,
    ConfigError,
    DeadlineExceeded,
    DeployCancelled,
    DeployError,
    EnvironmentUnreachable,
    ExitCode,
    ExternalCommandFailed,
    LockHeld,
    UsageError,
    exit_code_for,
)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (CheckFailed("smoke failed"), 1),
        (UsageError("bad tag"), 2),
        (ConfigError("bad key"), 2),
        (EnvironmentUnreachable("no engine"), 3),
        (DeadlineExceeded("not healthy"), 3),
        (ExternalCommandFailed("compose failed"), 3),
        (LockHeld("held by ci"), 4),
        (DeployCancelled("cancelled; the old release serves again"), 130),
        (RuntimeError("a bug"), 70),
        (KeyError("a bug"), 70),
    ],
)
def test_exit_codes_are_distinct_and_documented(error: BaseException, code: int) -> None:
    assert exit_code_for(error) == code


def test_exit_codes_do_not_collide() -> None:
    values = [int(c) for c in ExitCode]
    assert len(values) == len(set(values))


def test_one_line_says_what_happened_what_was_untouched_and_what_to_do() -> None:
    error = LockHeld(
        "environment production is locked by alice since 2026-11-27T01:00:00Z",
        untouched="nothing was deployed.",
        hint="wait, or run deploytools lock break --env production",
    )
    assert error.one_line() == (
        "environment production is locked by alice since 2026-11-27T01:00:00Z. "
        "Nothing was deployed. Wait, or run deploytools lock break --env production."
    )


def test_to_dict_carries_the_facts() -> None:
    error = DeployError("x", facts={"container": "c1"})
    assert error.to_dict()["facts"] == {"container": "c1"}
    assert error.to_dict()["type"] == "DeployError"
