"""`monitor --only-after-release`: a scheduled watch ends by itself once the serving release is
older than the window (monitor.yml's 24-hour watch). The store read is faked here; the records
it reads are the engine-tested ones of deploytools/store/."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.steps import monitor
from deploytools.store.records import ReleaseRecord, parse_time

CONFIG = Path(__file__).resolve().parents[2] / "deploy.toml"
FINISHED = "2026-11-26T10:00:00Z"
NOW = parse_time(FINISHED)


def record(finished: str | None = FINISHED) -> ReleaseRecord:
    return ReleaseRecord(
        id="0012", environment="production", kind="deploy", image="rbac-api:1.15.2",
        who="ci", started="2026-11-26T09:59:00Z", outcome="succeeded", finished=finished,
    )  # fmt: skip


def test_the_window_is_open_inside_and_closed_past_the_watch() -> None:
    inside = monitor.window_of(record(), 24 * 3600, now=NOW + 23.5 * 3600)
    assert inside.open
    assert inside.reason == "release 0012 finished 23.5 h ago, inside the 24.0 h watch"
    assert (inside.release, inside.age_s) == ("0012", 23.5 * 3600)
    past = monitor.window_of(record(), 24 * 3600, now=NOW + 24 * 3600)
    assert not past.open
    assert past.reason == (
        "release 0012 finished 24.0 h ago, past the 24.0 h watch: nothing to watch"
    )


def test_no_release_closes_the_window_and_one_in_progress_opens_it() -> None:
    assert not monitor.window_of(None, 3600, now=NOW).open
    going = monitor.window_of(record(finished=None), 3600, now=NOW)
    assert going.open and "still going" in going.reason


def test_a_closed_window_exits_0_without_watching(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, float]] = []

    def window(ctx, environment, within_s, *, now=None):  # type: ignore[no-untyped-def]
        asked.append((environment, within_s))
        return monitor.window_of(record(), within_s, now=NOW + 30 * 3600)

    def never(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("monitor watched although the window was closed")

    monkeypatch.setattr(monitor, "watch_window", window)
    monkeypatch.setattr(monitor, "run", never)
    monkeypatch.setattr(monitor, "retire", lambda ctx, environment: ())
    result = CliRunner().invoke(
        cli,
        ["--config", str(CONFIG), "monitor", "--env", "production", "--duration", "25m",
         "--only-after-release", "24h"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert asked == [("production", 24 * 3600.0)]
    assert "monitor on production: release 0012 finished 30.0 h ago, past the 24.0 h watch" in (
        result.stdout
    )


def test_a_malformed_window_is_a_usage_error_before_anything_is_read() -> None:
    result = CliRunner().invoke(
        cli,
        ["--config", str(CONFIG), "monitor", "--env", "production", "--duration", "25m",
         "--only-after-release", "a day"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "a day" in result.stderr
