"""smoke through the command line: one line per check, --json, the step summary, masking."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.steps import suite_record
from tests.fakes.rbac_service import CONFIG, ENVIRON, FakeState, fake_service


@pytest.fixture(autouse=True)
def saved(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """What the commands save in the release record; the store itself is not opened here."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def save(ctx: Any, environment: str, data: dict[str, Any], **kw: Any) -> str:
        calls.append((environment, data))
        return f"saved in release record 0007 of {environment}"

    monkeypatch.setattr(suite_record, "save", save)
    return calls


@pytest.fixture
def state() -> FakeState:
    return FakeState(users={"root": ("admin-password-123", ["admin"])})


@pytest.fixture
def config_file(state: FakeState, tmp_path: Path) -> Iterator[Path]:
    with fake_service(state) as url:
        path = tmp_path / "deploy.toml"
        path.write_text(CONFIG.replace("BASE_URL", url), encoding="utf-8")
        yield path


def invoke(config_file: Path, *args: str, **env: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["--config", str(config_file), *args],
        env={**ENVIRON, "GITHUB_ACTIONS": "", "GITHUB_STEP_SUMMARY": "", **env},
    )
    return result.exit_code, result.stdout, result.stderr


def test_smoke_prints_one_line_per_check_and_a_summary(config_file: Path) -> None:
    code, out, _ = invoke(config_file, "smoke", "--env", "local")
    assert code == 0, out
    lines = out.splitlines()
    assert any(
        line.startswith("PASS") and "health:" in line and "want status 200" in line
        for line in lines
    )
    assert lines[-1].startswith("smoke on local: pass (")
    assert "viewer-password-123" not in out


def test_smoke_json_and_step_summary(config_file: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    code, out, _ = invoke(
        config_file, "--json", "smoke", "--env", "local", GITHUB_STEP_SUMMARY=str(summary)
    )
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True and data["result"]["verdict"] == "pass"
    assert {r["name"] for r in data["result"]["results"]} >= {"health", "api p95"}
    table = summary.read_text(encoding="utf-8")
    assert table.startswith("### smoke on local: pass")
    assert "| check | verdict | measured | threshold | detail |" in table


def test_a_failed_check_exits_1_naming_it(config_file: Path, state: FakeState) -> None:
    state.db_down = True
    code, out, err = invoke(config_file, "smoke", "--env", "local")
    assert code == 1
    assert "FAIL         database connected" in out
    assert "error: smoke on local: " in err and "database connected" in err


def test_credentials_are_masked_in_github_actions(config_file: Path) -> None:
    code, out, err = invoke(config_file, "--json", "smoke", "--env", "local", GITHUB_ACTIONS="true")
    assert code == 0, out
    assert "::add-mask::viewer-password-123" in err
    assert "::add-mask::admin-password-123" in err
    # stdout stays one JSON document, and holds no credential.
    assert json.loads(out)["ok"] is True
    assert "password-123" not in out


def test_a_failed_suite_is_saved_in_the_release_record_too(
    config_file: Path, state: FakeState, saved: list[tuple[str, dict[str, Any]]]
) -> None:
    state.db_down = True
    code, out, _ = invoke(config_file, "--json", "smoke", "--env", "local")
    assert code == 1
    report = json.loads(out)["error"]["facts"]["report"]
    assert report["recorded"] == "saved in release record 0007 of local"
    [(environment, data)] = saved
    assert environment == "local" and data["suite"] == "smoke" and data["verdict"] == "fail"
    failed = [r for r in data["results"] if r["verdict"] == "fail"]
    assert failed[0]["name"] == "database connected" and failed[0]["threshold"]
