"""An exec's exit code is read once the engine has recorded it (the engine is faked here; every
integration test of the store and the database runs the real one)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from deploytools.database import Database
from deploytools.engine import exec as engine_exec
from deploytools.errors import ExternalCommandFailed


class Api:
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.asked = 0

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        self.asked += 1
        return self.answers[min(self.asked, len(self.answers)) - 1]


def test_an_exec_still_marked_running_is_asked_again_until_it_has_exited() -> None:
    api = Api([{"Running": True, "ExitCode": 0}] * 3 + [{"Running": False, "ExitCode": 2}])
    result = engine_exec.settle(api, "x", b"out", b"")
    assert result.exit_code == 2 and api.asked == 4


def test_an_exec_that_never_settles_is_not_taken_for_a_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_exec, "EXEC_SETTLE_S", 0.2)
    api = Api([{"Running": True, "ExitCode": 0}])
    assert engine_exec.settle(api, "x", b"", b"").exit_code == -1


def test_a_size_that_is_not_a_number_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(container=cast(Any, SimpleNamespace(name="rbac-db-1")), user="rbac",
                  name="rbac", environment="production")  # fmt: skip
    monkeypatch.setattr(Database, "query", lambda self, sql, database=None: "\n")
    with pytest.raises(ExternalCommandFailed, match="answered '' for the size of database rbac"):
        db.size_bytes()
    monkeypatch.setattr(Database, "query", lambda self, sql, database=None: " 8123\n")
    assert db.size_bytes() == 8123
