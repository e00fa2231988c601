"""The CLI's contract: one line per error, the documented exit code, --json everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploytools.cli import cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_config_check_on_the_repository_file_masks_secrets() -> None:
    result = invoke(
        "--config", str(REPO_ROOT / "deploy.toml"), "config", "check",
        env={"POSTGRES_PASSWORD": "s3cret-value", "GITHUB_TOKEN": "ghp_secret"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert "s3cret-value" not in result.output
    assert "ghp_secret" not in result.output
    assert "POSTGRES_PASSWORD: (set, hidden)" in result.output


def test_config_check_json() -> None:
    result = invoke("--config", str(REPO_ROOT / "deploy.toml"), "--json", "config", "check")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["result"]["environments"]["production"]["compose_project"] == "rbac-production"


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    text = (REPO_ROOT / "deploy.toml").read_text().replace("app_service =", "app_servic =")
    path = tmp_path / "deploy.toml"
    path.write_text(text)
    return path


def test_bad_config_is_one_line_on_stderr_and_exit_2(bad_config: Path) -> None:
    result = invoke("--config", str(bad_config), "config", "check")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f'error: {bad_config}: unknown key "project.app_servic" (did you mean "app_service"?). '
        "Nothing was done. Fix the file; deploy.toml in the repository explains every key."
    ]


def test_bad_config_json_error_object(bad_config: Path) -> None:
    result = invoke("--config", str(bad_config), "--json", "status", "--env", "staging")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["error"]["type"] == "ConfigError"
    assert data["error"]["exit_code"] == 2


def test_verbose_adds_the_traceback(bad_config: Path) -> None:
    result = invoke("--config", str(bad_config), "-v", "config", "check")
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr


def test_error_becomes_a_github_annotation_in_actions(bad_config: Path) -> None:
    result = invoke("--config", str(bad_config), "config", "check", env={"GITHUB_ACTIONS": "true"})
    assert result.stdout == ""
    assert "::error title=deploytools::" in result.stderr


def test_unknown_environment_is_a_usage_error() -> None:
    result = invoke("--config", str(REPO_ROOT / "deploy.toml"), "status", "--env", "prod")
    assert result.exit_code == 2
    assert 'unknown environment "prod"' in result.stderr
    assert 'did you mean "production"?' in result.stderr


def test_help_needs_no_configuration(tmp_path: Path) -> None:
    result = invoke("--config", str(tmp_path / "missing.toml"), "status", "--help")
    assert result.exit_code == 0
    assert "--env" in result.output


def test_a_bug_is_exit_70_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploytools.steps import status as status_step

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("oops")

    monkeypatch.setattr(status_step, "run", broken)
    result = invoke("--config", str(REPO_ROOT / "deploy.toml"), "status", "--env", "staging")
    assert result.exit_code == 70
    assert result.stderr.startswith("error: internal error in deploytools: KeyError")
