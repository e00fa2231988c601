"""The watch window after a rolling deploy (steps/watch_keep.py): when a rollback may switch the
proxy back to the kept container, and when it takes the cold path; the deploy.toml key; old
records without the new fields. The engine and the proxy are exercised in
tests/integration/test_watch_window.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.config import parse_config
from deploytools.errors import ConfigError
from deploytools.steps import watch_keep
from deploytools.steps.watch_keep import KeptState
from deploytools.store.records import ReleaseRecord, dump, from_dict, parse_time
from tests.helpers.deploy_toml import MINIMAL

NOW = parse_time("2026-12-06T12:00:00Z")
HEALTHY = KeptState(running=True, healthy=True, health="healthy", image_id="sha256:old")


def deploy(**fields: Any) -> ReleaseRecord:
    base: dict[str, Any] = {
        "id": "0002",
        "environment": "production",
        "kind": "deploy",
        "who": "me",
        "started": "2026-12-06T11:50:00Z",
        "image": "app:2",
        "image_id": "sha256:new",
        "strategy": "rolling",
        "outcome": "succeeded",
        "kept_container": "c0ffee",
        "kept_container_name": "prod-app-1",
        "kept_until": "2026-12-06T12:50:00Z",
    }
    return ReleaseRecord(**{**base, **fields})


def refusal(
    record: ReleaseRecord | None = None,
    *,
    kept: KeptState | None = HEALTHY,
    restore: bool = False,
    proxy_running: bool = True,
    target_image_id: str = "sha256:old",
    now: float = NOW,
) -> str | None:
    return watch_keep.switch_back_refusal(
        current=record or deploy(),
        target_image_id=target_image_id,
        restore=restore,
        proxy_running=proxy_running,
        kept=kept,
        now=now,
    )


def test_in_the_window_a_healthy_kept_container_of_the_target_image_is_switched_back_to() -> None:
    assert refusal() is None


def test_no_target_image_id_recorded_still_switches_back() -> None:
    assert refusal(target_image_id="") is None


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({"record": deploy(kept_container=None)}, "no container of the previous release is kept"),
        ({"now": parse_time("2026-12-06T12:50:00Z")}, "the watch window ended at 2026-12-06T12:50"),
        ({"record": deploy(kept_until=None)}, "the watch window ended"),
        ({"restore": True}, "the rollback may restore the database"),
        ({"proxy_running": False}, "the proxy does not run"),
        ({"kept": None}, "the kept container prod-app-1 is gone"),
        ({"kept": KeptState(False, False, None, "sha256:old")}, "prod-app-1 does not run"),
        (
            {"kept": KeptState(True, False, "unhealthy", "sha256:old")},
            "prod-app-1 is not healthy (unhealthy)",
        ),
        ({"target_image_id": "sha256:older"}, "another release than the kept container's"),
    ],
)
def test_otherwise_the_rollback_takes_the_cold_path_and_says_why(
    case: dict[str, Any], expected: str
) -> None:
    why = refusal(**case)
    assert why is not None and expected in why


def test_keep_notes_the_container_and_the_end_of_the_window() -> None:
    record = deploy(kept_container=None, kept_container_name=None, kept_until=None)
    container: Any = SimpleNamespace(id="abc123", name="prod-app-1")
    watch_keep.keep(record, container, window_s=3600, now=NOW)
    assert (record.kept_container, record.kept_container_name) == ("abc123", "prod-app-1")
    assert record.kept_until == "2026-12-06T13:00:00Z"
    assert "kept up, drained, until 2026-12-06T13:00:00Z" in record.notes[-1]
    assert not watch_keep.expired(record, NOW + 3599)
    assert watch_keep.expired(record, NOW + 3600)


def test_a_record_written_before_the_window_reads_with_nothing_kept() -> None:
    stored = json.loads(dump(deploy()))
    for key in ("kept_container", "kept_container_name", "kept_until", "watch_window_rollback"):
        del stored[key]
    old = from_dict(ReleaseRecord, stored)
    assert old.kept_container is None and old.watch_window_rollback is False
    assert refusal(old) == "no container of the previous release is kept"


CONFIG = MINIMAL


def test_the_window_defaults_to_an_hour_and_0_turns_it_off() -> None:
    assert parse_config(CONFIG, Path("deploy.toml")).deploy.watch_window_s == 3600.0
    text = CONFIG + "\n[deploy]\nwatch_window_s = 0\n"
    assert parse_config(text, Path("deploy.toml")).deploy.watch_window_s == 0.0


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "700000", '"1h"'])
def test_a_bad_window_is_refused_before_anything_runs(value: str) -> None:
    text = CONFIG + f"\n[deploy]\nwatch_window_s = {value}\n"
    with pytest.raises(ConfigError) as raised:
        parse_config(text, Path("deploy.toml"))
    assert '"deploy.watch_window_s"' in raised.value.message


# -- the rollback step's route: switch back, or the cold path ---------------------------------


class _Db:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def revision(self, **_: Any) -> str:
        self.events.append("revision")
        return "0002"


def _not_called(*args: Any) -> None:
    raise AssertionError("not on this path")


def _route(
    monkeypatch: pytest.MonkeyPatch, current: ReleaseRecord, *, kept: KeptState | None
) -> tuple[list[str], ReleaseRecord]:
    """rollback.roll_back_in over fakes: the order of what it does, and its record."""
    from deploytools.steps import rollback

    events: list[str] = []
    older = deploy(id="0001", image="app:1", image_id="sha256:old", kept_container=None)
    history = SimpleNamespace(
        releases_and_next_id=lambda: ([older, current], "0003"),
        save_release=lambda record: events.append(f"save {record.id}"),
    )
    session: Any = SimpleNamespace(
        history=history, target=SimpleNamespace(name="production"), progress=lambda m: None
    )
    container: Any = SimpleNamespace(id="c0ffee", name="prod-app-1")
    target = rollback.RollbackTarget("app:1", "sha256:old", "1", "0001")
    monkeypatch.setattr(rollback, "_choose", lambda *a: (target, [current]))
    monkeypatch.setattr(rollback.Database, "of", staticmethod(lambda t: _Db(events)))
    monkeypatch.setattr(rollback.proxy, "container", lambda t: object())
    # A rollback reads the records once (with the next id), and what runs now only to restore.
    monkeypatch.setattr(rollback.backup_step, "current_origin", _not_called)
    monkeypatch.setattr(rollback.app_service, "Phases", lambda s, r: None)
    monkeypatch.setattr(watch_keep, "kept_container", lambda t, r: container)
    monkeypatch.setattr(watch_keep, "observe", lambda c: kept)
    monkeypatch.setattr(watch_keep, "expired", lambda r, now: False)
    monkeypatch.setattr(
        watch_keep,
        "switch_back",
        lambda s, cur, c, phases, gateway, api: events.append(f"switch back {c.id}"),
    )
    monkeypatch.setattr(
        watch_keep, "retire_all", lambda s, records, why: events.append(f"retire: {why}")
    )
    monkeypatch.setattr(
        rollback.deploy_rolling, "roll_to", lambda s, image, phases: events.append(f"roll {image}")
    )
    record = rollback.roll_back_in(session)
    return events, record


def test_a_rollback_in_the_window_switches_back_before_reading_the_revision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, record = _route(monkeypatch, deploy(expand_only=True), kept=HEALTHY)
    assert events[0] == "switch back c0ffee"  # it saves the record after its cut (below)
    assert "revision" in events[2:] and not any(e.startswith(("roll ", "retire")) for e in events)
    assert record.watch_window_rollback is True and record.outcome == "succeeded"
    assert record.revision_before == record.revision_after == "0002"
    assert any(n.startswith("watch-window rollback") for n in record.notes)


def test_an_unhealthy_kept_container_is_removed_and_the_rollback_rolls_cold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sick = KeptState(running=True, healthy=False, health="unhealthy", image_id="sha256:old")
    events, record = _route(monkeypatch, deploy(expand_only=True), kept=sick)
    assert events[0] == "revision"
    assert events[1].startswith("retire: the rollback does not switch back to it (")
    assert "roll app:1" in events and not any(e.startswith("switch back") for e in events)
    assert record.watch_window_rollback is False
    assert any("not a watch-window rollback: " in n and "unhealthy" in n for n in record.notes)


def test_a_release_not_expand_only_never_switches_back(monkeypatch: pytest.MonkeyPatch) -> None:
    same_schema = deploy(expand_only=False, revision_before="0002")
    events, record = _route(monkeypatch, same_schema, kept=HEALTHY)
    assert not any(e.startswith("switch back") for e in events)
    assert "roll app:1" in events  # no restore after all (same revision): the cold switch
    assert any("may restore the database" in n for n in record.notes)


def test_the_switch_back_cuts_before_any_store_write_and_saves_during_the_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deploytools.steps import app_service

    events: list[str] = []
    current = deploy()
    rollback_record = deploy(id="0003", kind="rollback", outcome="in-progress")
    history = SimpleNamespace(save_release=lambda r: events.append(f"save {r.id}"))
    session: Any = SimpleNamespace(
        target=SimpleNamespace(name="production", running=lambda service: [kept, newer]),
        ctx=SimpleNamespace(config=SimpleNamespace(project=SimpleNamespace(app_service="app"))),
        history=history,
        progress=lambda message: events.append(message),
        refresh_lock=lambda: None,
    )
    kept: Any = SimpleNamespace(id="c0ffee", name="prod-app-1")
    newer: Any = SimpleNamespace(id="beef", name="prod-app-2")
    api = SimpleNamespace(close=lambda: events.append("session closed"))
    monkeypatch.setattr(watch_keep.proxy, "settings", lambda t: SimpleNamespace(app_port=8000))
    monkeypatch.setattr(watch_keep.proxy, "RuntimeApi", lambda gateway: api)
    monkeypatch.setattr(watch_keep.proxy, "address", lambda c, gateway: "10.0.0.5")
    monkeypatch.setattr(watch_keep.proxy, "prepare", lambda *a, **k: "prepared")
    monkeypatch.setattr(watch_keep.proxy, "cut", lambda prepared: events.append("cut"))
    monkeypatch.setattr(
        watch_keep,
        "settle",
        lambda gateway, api, drained, back, port, since: events.append(
            f"settle {[c.id for c in drained]} to {back} since the cut"
        ),
    )
    phases = app_service.Phases(session, rollback_record)
    watch_keep.switch_back(session, current, kept, phases, gateway=object())  # type: ignore[arg-type]
    assert [e for e in events if "0003" in e or e in ("cut",) or e.startswith("settle")] == [
        "rollback 0003: switch",
        "cut",
        "save 0003",
        "rollback 0003: drain",
        "settle ['beef'] to 10.0.0.5 since the cut",
    ]
    assert events[-2:] == ["session closed", "save 0002"]
    assert current.kept_container is None


def test_the_pause_before_the_stop_counts_from_the_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(watch_keep.time, "sleep", slept.append)
    monkeypatch.setattr(watch_keep.time, "monotonic", lambda: 100.2)
    monkeypatch.setattr(watch_keep.proxy, "switch", lambda *a, **k: None)
    watch_keep.settle(object(), object(), [], "10.0.0.5", port=8000, since=100.0)  # type: ignore[arg-type]
    watch_keep.settle(object(), object(), [], "10.0.0.5", port=8000, since=99.0)  # type: ignore[arg-type]
    assert slept == [pytest.approx(watch_keep.STOP_SETTLE_S - 0.2), 0.0]


def test_the_switch_session_is_opened_before_the_lock_and_closed_on_every_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deploytools.errors import ExternalCommandFailed, LockHeld
    from deploytools.steps import rollback

    events: list[str] = []
    gateway = SimpleNamespace(name="proxy")
    api = SimpleNamespace(close=lambda: events.append("closed"))
    monkeypatch.setattr(watch_keep.proxy, "container", lambda t: gateway)
    monkeypatch.setattr(watch_keep.proxy, "RuntimeApi", lambda g: events.append("opened") or api)
    ctx: Any = SimpleNamespace(
        target=lambda environment: "target",
        config=SimpleNamespace(environment=lambda name: SimpleNamespace(is_swarm=False)),
    )

    def locked(*args: Any) -> None:
        events.append("locked")
        assert args[-1] == watch_keep.SwitchSession(gateway, api)  # type: ignore[arg-type]
        raise LockHeld("another rollback holds the lock")

    monkeypatch.setattr(rollback, "_run_locked", locked)
    with pytest.raises(LockHeld):
        rollback.run(ctx, environment="production")
    assert events == ["opened", "locked", "closed"]
    # No proxy, or no session: None, and the switch opens its own.
    monkeypatch.setattr(watch_keep.proxy, "container", lambda t: None)
    assert watch_keep.open_switch_session("target") is None  # type: ignore[arg-type]
    monkeypatch.setattr(watch_keep.proxy, "container", lambda t: gateway)

    def refused(g: Any) -> None:
        raise ExternalCommandFailed("running bash in container proxy failed")

    monkeypatch.setattr(watch_keep.proxy, "RuntimeApi", refused)
    assert watch_keep.open_switch_session("target") is None  # type: ignore[arg-type]
