"""Which error a verified backup's failed pass becomes: the backup's fault (exit 1) only when the
restore side failed and the server still answers; anything else is the environment's (exit 3)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.commands import postgres as pg
from deploytools.errors import CheckFailed, ExternalCommandFailed
from deploytools.steps import backup as backup_step
from deploytools.store.files import ExecResult


def _db(*, reachable: bool) -> Any:
    return SimpleNamespace(container=SimpleNamespace(name="prod_db_1"), reachable=lambda: reachable)


def _result(code: int, stderr: str) -> ExecResult:
    return ExecResult(exit_code=code, stdout=b"", stderr=stderr.encode())


def test_a_restore_failing_while_the_server_answers_is_the_backups_fault() -> None:
    error = backup_step._dump_failure(
        _db(reachable=True),
        _result(pg.RESTORE_FAILED, "pg_restore: error: could not execute query: ERROR: x"),
        verified=True,
    )
    assert isinstance(error, CheckFailed)
    assert error.exit_code == 1
    assert (
        error.message
        == "the test restore failed: pg_restore: error: could not execute query: ERROR: x"
    )


@pytest.mark.parametrize(
    ("code", "reachable"),
    [
        (pg.RESTORE_FAILED, False),  # the server went away: both sides fail, the restore first
        (pg.DUMP_FAILED, True),
        (pg.STREAM_CUT, True),
        (137, False),  # the container was killed with the script in it
        (-1, False),  # the engine lost the exec
    ],
)
def test_anything_else_is_the_environments(code: int, reachable: bool) -> None:
    error = backup_step._dump_failure(
        _db(reachable=reachable), _result(code, "pg_dump: error: connection lost"), verified=True
    )
    assert isinstance(error, ExternalCommandFailed)
    assert error.exit_code == 3
    assert f"(exit {code}): pg_dump: error: connection lost" in error.message


def test_a_plain_dump_failing_is_the_environments() -> None:
    error = backup_step._dump_failure(
        _db(reachable=True), _result(pg.RESTORE_FAILED, "pg_dump: error: x"), verified=False
    )
    assert isinstance(error, ExternalCommandFailed)
    assert error.message.startswith("pg_dump failed in prod_db_1")
