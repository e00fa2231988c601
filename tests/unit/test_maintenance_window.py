"""A recreate in production announces its maintenance window, with the expected downtime,
before anything stops: only where notifications are configured; a failed notice is a warning
unless notifications are required (then the deploy stops with nothing stopped)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.config import Config, load_config
from deploytools.context import StepContext
from deploytools.errors import EnvironmentUnreachable
from deploytools.steps import deploy as deploy_step
from deploytools.steps import deploy_strategy, maintenance
from deploytools.steps.app_service import RunningApp
from deploytools.steps.migrate import ImageInfo
from deploytools.store.environment import EnvironmentStore
from deploytools.store.records import ReleaseRecord
from tests.fakes.memory_store import MemoryStore

REPO_ROOT = Path(__file__).resolve().parents[2]
HOOK = {"SLACK_WEBHOOK_URL": "https://hooks.example/T0/B0/secret"}


def config(*, required: bool = False) -> Config:
    loaded = load_config(REPO_ROOT / "deploy.toml")
    notifications = dataclasses.replace(loaded.notifications, required=required)
    return dataclasses.replace(loaded, notifications=notifications)


def record(
    id: str, *, strategy: str = "recreate", outcome: str = "succeeded", **timings: float
) -> ReleaseRecord:
    return ReleaseRecord(
        id=id, environment="production", kind="deploy", who="t", started="2026-01-01T00:00:00Z",
        image=f"rbac:{id}", version="1.15.2", strategy=strategy, outcome=outcome,
        strategy_reason="its migrations are not expand-only", timings=dict(timings),
    )  # fmt: skip


RECREATE = {"stop": 1.7, "migrate": 2.4, "start": 1.1, "healthy": 2.1}


def test_the_expected_downtime_is_the_last_measured_recreate() -> None:
    records = [
        record("0001", **{k: v * 2 for k, v in RECREATE.items()}),
        record("0002", **RECREATE, backup=5.0),  # the backup serves: not downtime
        record("0003", strategy="rolling", start=1.0, healthy=2.0, switch=0.1),
        record("0004", outcome="failed", **RECREATE),
    ]
    expected = maintenance.expected_downtime(records)
    assert expected.seconds == pytest.approx(7.3)
    assert expected.text == "about 8 s (the last recreate here, release 0002, was down 7.3 s)"


def test_without_a_measured_recreate_the_default_is_announced() -> None:
    expected = maintenance.expected_downtime([record("0001", strategy="rolling")])
    assert expected.seconds == maintenance.DEFAULT_DOWNTIME_S
    assert "no recreate measured in this environment yet" in expected.text


def test_production_and_approval_guarded_environments_announce_staging_does_not() -> None:
    cfg = config()
    assert maintenance.announced_in(cfg, "production")
    assert not maintenance.announced_in(cfg, "staging")
    guarded = dataclasses.replace(cfg.environment("staging"), requires_approval=True)
    cfg = dataclasses.replace(cfg, environments={**cfg.environments, "staging": guarded})
    assert maintenance.announced_in(cfg, "staging")


class Poster:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.sent: list[Mapping[str, Any]] = []

    def __call__(self, url: str, payload: Mapping[str, Any], timeout_s: float) -> tuple[int, str]:
        self.sent.append(payload)
        return self.status, "ok" if self.status == 200 else "invalid_token"


def announce(
    cfg: Config, environ: Mapping[str, str], post: Poster, lines: list[str] | None = None
) -> str:
    ctx = StepContext(config=cfg, progress=(lines if lines is not None else []).append)
    expected = maintenance.expected_downtime([record("0002", **RECREATE)])
    return maintenance.announce(ctx, record("0005"), expected, environ=environ, post=post)


def test_without_a_configured_hook_nothing_is_sent_and_the_record_says_so() -> None:
    post = Poster()
    note = announce(config(required=True), {}, post)
    assert post.sent == []
    assert note.startswith("maintenance window not announced: no notification hook")
    assert "about 8 s" in note


def test_the_notice_says_what_is_deployed_why_recreate_and_the_expected_downtime() -> None:
    post = Poster()
    note = announce(config(), HOOK, post)
    assert note == (
        "maintenance window announced to slack: expected downtime about 8 s (the last "
        "recreate here, release 0002, was down 7.3 s)"
    )
    [payload] = post.sent
    assert "maintenance window for production begins" in payload["text"]
    assert "1.15.2 is deployed with the recreate strategy" in payload["text"]
    assert "its migrations are not expand-only" in payload["text"]
    assert "expected about 8 s" in payload["text"]
    assert HOOK["SLACK_WEBHOOK_URL"] not in note


def test_a_failed_notice_is_a_warning_and_the_deploy_goes_on() -> None:
    lines: list[str] = []
    note = announce(config(), HOOK, Poster(status=500), lines)
    assert note.startswith("maintenance window announcement FAILED (slack: HTTP 500")
    assert any(line.startswith("warning: maintenance window announcement failed") for line in lines)


def test_a_failed_notice_stops_the_deploy_when_notifications_are_required() -> None:
    with pytest.raises(EnvironmentUnreachable, match="notify maintenance-window: slack: HTTP 500"):
        announce(config(required=True), HOOK, Poster(status=500))


# -- in the deploy: after the backup, before the strategy stops anything ------------------------


class _Replacer:
    def __init__(self, name: str, events: list[str]) -> None:
        self.name, self.events = name, events

    def admit(self, session: object, info: object) -> None:
        return None

    def replace(self, session: object, record: ReleaseRecord, phases: object) -> None:
        self.events.append(f"{self.name}: stop, migrate, start")


def _deploy(
    monkeypatch: pytest.MonkeyPatch,
    *,
    strategy: str,
    environment: str = "production",
    running: RunningApp | None = None,
    announce_error: Exception | None = None,
    events: list[str] | None = None,
) -> tuple[list[str], EnvironmentStore]:
    events = [] if events is None else events
    running = running or RunningApp("rbac:1.15.1", "sha256:old", healthy=True)
    monkeypatch.setattr(deploy_step, "running_app", lambda target: running)
    monkeypatch.setattr(deploy_step, "ensure_database", lambda session: None)
    monkeypatch.setattr(deploy_step.proxy, "ensure_running", lambda *a, **k: None)
    monkeypatch.setattr(
        deploy_step.Database, "of", lambda target: SimpleNamespace(revision=lambda: "0001")
    )
    monkeypatch.setattr(
        deploy_step.backup_step,
        "ensure_pre_deploy",
        lambda *a: events.append("backup") or "backup-1",
    )
    monkeypatch.setattr(deploy_step, "keep_images", lambda *a: None)

    def announce(ctx: object, rec: ReleaseRecord, expected: object, **kw: object) -> str:
        events.append("announce")
        if announce_error is not None:
            raise announce_error
        return "maintenance window announced to slack: expected downtime about 60 s"

    monkeypatch.setattr(maintenance, "announce", announce)
    history = EnvironmentStore(MemoryStore(), environment)  # type: ignore[arg-type]

    session: Any = SimpleNamespace(
        ctx=StepContext(config=config()),
        target=SimpleNamespace(name=environment),
        history=history,
        progress=lambda m: None,
        refresh_lock=lambda: None,
    )
    info = ImageInfo("rbac:1.15.2", "sha256:new", "1.15.2", expand_only=None)
    choice = deploy_strategy.StrategyChoice("auto", strategy, "why")
    deploy_step._deploy(
        session,
        info,
        _Replacer(strategy, events),
        choice=choice,
        approved_by=None,
        no_backup_check=False,
    )
    return events, history


def test_a_production_recreate_announces_after_the_backup_before_the_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, history = _deploy(monkeypatch, strategy="recreate")
    assert events == ["backup", "announce", "recreate: stop, migrate, start"]
    [saved] = history.releases()
    assert (
        saved.maintenance == "maintenance window announced to slack: expected downtime about 60 s"
    )
    assert (saved.strategy, saved.strategy_asked, saved.strategy_reason) == (
        "recreate",
        "auto",
        "why",
    )


@pytest.mark.parametrize(
    ("strategy", "environment"), [("rolling", "production"), ("recreate", "staging")]
)
def test_rolling_and_staging_announce_no_window(
    monkeypatch: pytest.MonkeyPatch, strategy: str, environment: str
) -> None:
    events, history = _deploy(monkeypatch, strategy=strategy, environment=environment)
    assert "announce" not in events
    assert history.releases()[0].maintenance is None


def test_a_required_notice_that_fails_stops_the_deploy_before_anything_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failure = EnvironmentUnreachable("notify maintenance-window: slack: HTTP 500")
    events: list[str] = []
    with pytest.raises(EnvironmentUnreachable) as caught:
        _deploy(monkeypatch, strategy="recreate", announce_error=failure, events=events)
    assert events == ["backup", "announce"]  # nothing was stopped
    assert "the running release (rbac:1.15.1) was not stopped and still serves" in (
        caught.value.untouched or ""
    )
    assert caught.value.message.startswith("deploy of rbac:1.15.2 to production failed: notify")
