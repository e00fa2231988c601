"""Deploy windows and freezes: pure functions over an injected clock, the config, and the CLI."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploytools import deploy_windows
from deploytools.cli import cli
from deploytools.config import Config, load_config, parse_config
from deploytools.deploy_windows import (
    FreezeConfig,
    OutsideWindow,
    WindowsConfig,
    allowed,
    check_window,
    next_allowed,
    parse_window,
    rules_for,
)
from deploytools.errors import ConfigError, ExitCode
from tests.helpers.deploy_toml import MINIMAL

BASE = MINIMAL + textwrap.dedent(
    """
    [environments.production]
    docker_host = "tcp://127.0.0.1:9"
    compose_project = "svc-production"
    base_url = "http://127.0.0.1:8080"
    """
)

PRODUCTION = """
[windows.production]
allow = ["Mon-Thu 22:00-06:00", "Sat,Sun 00:00-24:00"]
freezes = [
  { start = "2026-12-24", end = "2026-12-26", reason = "holidays" },
  { start = "2026-11-30T21:00Z", end = "2026-12-01T02:00Z", reason = "migration of the DC" },
]
"""


def config(extra: str = PRODUCTION) -> Config:
    return parse_config(BASE + extra, Path("deploy.toml"))


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


RULES = rules_for(config(), "production")

# 2026-11-23 is a Monday.


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2026-11-23 21:59", False),  # Monday before the window
        ("2026-11-23 22:00", True),  # Monday's window opens
        ("2026-11-24 05:59", True),  # ... and runs past midnight into Tuesday
        ("2026-11-24 06:00", False),  # the end is excluded
        ("2026-11-24 12:00", False),  # Tuesday peak
        ("2026-11-27 03:00", True),  # Friday early: Thursday's window
        ("2026-11-27 23:00", False),  # Friday night: no window starts on Friday
        ("2026-11-28 12:00", True),  # Saturday all day
        ("2026-11-30 03:00", False),  # Monday 03:00: Sunday's whole day ended at 00:00
        ("2026-11-30 22:30", False),  # Monday's window, but frozen (DC migration)
        ("2026-12-01 02:00", True),  # freeze over, Monday's window still open
        ("2026-12-24 23:00", False),  # Thursday's window, Christmas freeze (date: whole day)
        ("2026-12-26 12:00", False),  # Saturday, but the end date is included in the freeze
        ("2026-12-27 00:00", True),  # Sunday after the freeze
    ],
)
def test_allowed_at(moment: str, expected: bool) -> None:
    assert allowed(RULES, at(moment)) is expected


def test_next_allowed_is_the_next_window_start() -> None:
    assert next_allowed(RULES, at("2026-11-24 12:00")) == at("2026-11-24 22:00")
    # Friday peak: Saturday's whole-day window.
    assert next_allowed(RULES, at("2026-11-27 12:00")) == at("2026-11-28 00:00")
    # Inside the window: now.
    assert next_allowed(RULES, at("2026-11-28 12:00")) == at("2026-11-28 12:00")


def test_next_allowed_skips_a_freeze_to_its_end_inside_a_window() -> None:
    assert next_allowed(RULES, at("2026-11-30 22:30")) == at("2026-12-01 02:00")
    # Christmas Eve: Thursday and Friday frozen, the freeze ends Sunday 00:00 (Saturday
    # included) and Sunday is a whole-day window.
    assert next_allowed(RULES, at("2026-12-24 23:00")) == at("2026-12-27 00:00")


def test_no_windows_means_always_allowed_but_freezes_hold() -> None:
    cfg = config('[windows.staging]\nfreezes = [{ start = "2026-12-24", end = "2026-12-24" }]\n')
    assert check_window(cfg, "staging", at("2026-11-24 12:00")) is None
    assert check_window(cfg, "production", at("2026-11-24 12:00")) is None  # no table at all
    with pytest.raises(OutsideWindow) as caught:
        check_window(cfg, "staging", at("2026-12-24 12:00"))
    assert "next allowed Fri 2026-12-25 00:00 UTC" in caught.value.message


def test_refusal_names_the_next_allowed_time_and_what_was_left() -> None:
    with pytest.raises(OutsideWindow) as caught:
        check_window(config(), "production", at("2026-11-24 12:00"))
    error = caught.value
    assert error.exit_code == ExitCode.USAGE
    assert "deploy to production refused at Tue 2026-11-24 12:00 UTC" in error.message
    assert "next allowed Tue 2026-11-24 22:00 UTC" in error.message
    assert error.untouched == "nothing was done to production"
    assert "--outside-window" in (error.hint or "")
    assert error.facts["next_allowed"] == "2026-11-24T22:00:00+00:00"


def test_a_freeze_is_named_with_its_reason() -> None:
    with pytest.raises(OutsideWindow) as caught:
        check_window(config(), "production", at("2026-12-25 12:00"), operation="migrate")
    assert "migrate to production refused" in caught.value.message
    assert "(holidays)" in caught.value.message


def test_outside_window_with_a_reason_goes_on_and_says_why() -> None:
    note = check_window(config(), "production", at("2026-11-24 12:00"), outside_window="CVE hotfix")
    assert note is not None
    assert "CVE hotfix" in note
    assert "outside its deploy windows" in note
    # A blank reason is no reason.
    with pytest.raises(OutsideWindow):
        check_window(config(), "production", at("2026-11-24 12:00"), outside_window="  ")


def test_no_allowed_time_within_a_year() -> None:
    cfg = config(
        '[windows.production]\nallow = ["Mon 01:00-02:00"]\n'
        'freezes = [{ start = "2026-01-01", end = "2028-01-01" }]\n'
    )
    with pytest.raises(OutsideWindow) as caught:
        check_window(cfg, "production", at("2026-11-24 12:00"))
    assert "no allowed time within a year" in caught.value.message


@pytest.mark.parametrize(
    ("text", "days", "minutes"),
    [
        ("Mon-Fri 22:00-06:00", {0, 1, 2, 3, 4}, 480),
        ("Fri-Mon 09:00-17:00", {4, 5, 6, 0}, 480),
        ("sat,sun 00:00-24:00", {5, 6}, 1440),
        ("* 10:00-10:00", set(range(7)), 1440),
        ("Wednesday 01:30-02:00", {2}, 30),
    ],
)
def test_parse_window(text: str, days: set[int], minutes: int) -> None:
    window = parse_window(text)
    assert window.days == frozenset(days)
    assert window.minutes == minutes


W = "[windows.production]\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[windows.prod]\nallow = ["Mon 01:00-02:00"]\n',
            '[windows.prod] names no environment (did you mean "production"?)',
        ),
        (W + 'allow = ["Mon 25:00-02:00"]\n', '"windows.production": "25:00" is not a time'),
        (W + 'allow = ["Funday 01:00-02:00"]\n', '"funday" is not a day'),
        (W + 'allow = ["weekdays"]\n', 'is not "DAYS HH:MM-HH:MM"'),
        (
            W + 'freezes = [{ start = "24.12.2026", end = "2026-12-26" }]\n',
            '"24.12.2026" is not a date',
        ),
        (
            W + 'freezes = [{ start = "2026-12-26", end = "2026-12-24" }]\n',
            "ends before it starts",
        ),
        (W + "allowed = []\n", 'unknown key "windows.production.allowed"'),
    ],
)
def test_bad_windows_are_refused_when_the_file_is_loaded(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(extra)
    assert message in caught.value.message


def _window_excluding_now() -> str:
    """A one-hour daily window starting three hours from now: now is never inside it."""
    start = datetime.now(UTC) + timedelta(hours=3)
    end = start + timedelta(hours=1)
    return f'[windows.production]\nallow = ["* {start:%H}:00-{end:%H}:00"]\n'


def test_cli_deploy_and_migrate_outside_the_window_touch_nothing(tmp_path: Path) -> None:
    # production's engine is tcp://127.0.0.1:9 (nothing listens): had the command got as far as
    # the engine it would fail with exit 3; exit 2 with the window's message shows it stopped
    # before touching anything.
    path = tmp_path / "deploy.toml"
    path.write_text(BASE + _window_excluding_now())
    runner = CliRunner()
    for command in (["deploy"], ["migrate"]):
        result = runner.invoke(
            cli,
            ["--config", str(path), "--json", *command, "--env", "production", "--image", "x:1"],
        )
        assert result.exit_code == ExitCode.USAGE, result.output
        error = json.loads(result.stdout)["error"]
        assert error["type"] == "OutsideWindow"
        assert "next allowed" in error["message"]
        assert error["facts"]["next_allowed"] is not None
    # With a reason it gets past the window to the engine (which is unreachable here: exit 3).
    result = runner.invoke(
        cli,
        [
            "--config", str(path), "--json", "deploy", "--env", "production", "--image", "x:1",
            "--outside-window", "hotfix",
        ],
    )  # fmt: skip
    assert result.exit_code == ExitCode.ENVIRONMENT, result.output
    assert json.loads(result.stdout)["error"]["type"] != "OutsideWindow"


def test_the_repository_deploy_toml_leaves_the_local_environments_open() -> None:
    repo = load_config(Path(__file__).resolve().parents[2] / "deploy.toml")
    for name in repo.environments:
        assert rules_for(repo, name).unrestricted


def test_cli_pipeline_run_outside_a_window_stops_before_its_first_step(tmp_path: Path) -> None:
    # Both environments' engines are unreachable here; exit 2 with OutsideWindow shows that
    # pipeline run stopped before opening production's store (the first thing it touches).
    path = tmp_path / "deploy.toml"
    path.write_text(
        BASE.replace('base_url = "http://127.0.0.1:8081"', 'base_url = "http://127.0.0.1:8081"\n'
                     'docker_host = "tcp://127.0.0.1:9"')
        + _window_excluding_now().replace("production", "staging")
    )  # fmt: skip
    result = CliRunner().invoke(
        cli,
        ["--config", str(path), "--json", "pipeline", "run", "--tag", "v1.15.2", "--yes"],
    )
    assert result.exit_code == ExitCode.USAGE, result.output
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "OutsideWindow"
    assert error["message"].startswith("pipeline run to staging refused")


def test_a_freeze_ending_on_the_last_day_of_the_calendar_is_refused_not_a_crash() -> None:
    """Found by the property suite: 9999-12-31 as an end day overflowed (OverflowError, exit 70)."""
    table = WindowsConfig(freezes=(FreezeConfig("2026-01-01", "9999-12-31"),))
    with pytest.raises(ValueError, match="too far in the future"):
        deploy_windows.parse(table)
