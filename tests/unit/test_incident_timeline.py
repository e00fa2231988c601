"""The incident report's timeline in the order things happened, its status when the previous
release serves again without a rollback, and the failed migration's output among its logs; the
records go through the store's JSON (sorted keys) as they do in production."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from deploytools.steps import incident
from deploytools.store.records import ReleaseRecord, dump, from_dict
from tests.unit.test_incident import config


def stored(**kw: Any) -> dict[str, Any]:
    """A release record as the store writes and reads it back."""
    record = ReleaseRecord(environment="production", who="ci", **kw)
    return dataclasses.asdict(from_dict(ReleaseRecord, json.loads(dump(record))))


OLD = stored(
    id="0001",
    kind="deploy",
    image="svc:1.0",
    started="2026-11-20T22:00:00Z",
    finished="2026-11-20T22:01:00Z",
    outcome="succeeded",
)


def failed_migration(**kw: Any) -> dict[str, Any]:
    return stored(
        id="0002",
        kind="deploy",
        image="svc:1.1",
        started="2026-11-24T22:00:00Z",
        finished="2026-11-24T22:00:40Z",
        outcome="failed",
        previous="0001",
        previous_image="svc:1.0",
        error="the migration with svc:1.1 failed: sqlalchemy.exc.ProgrammingError: boom",
        timings={"backup": 20.0, "stop": 2.0, "migrate": 5.0},
        notes=["the previous release (svc:1.0) serves again"],
        failure_output=[
            "INFO  [alembic.runtime.migration] Running upgrade 0001 -> 0002, add column",
            'sqlalchemy.exc.ProgrammingError: column "x" already exists',
        ],
        **kw,
    )


def test_the_store_sorts_the_timings_and_the_timeline_puts_them_back_in_order() -> None:
    record = failed_migration()
    assert list(record["timings"]) == ["backup", "migrate", "stop"]  # what the store gives back
    report = incident.build(config(), environment="production", records=[OLD, record])
    phases = [(e.at, e.text) for e in report.timeline if " phase " in e.text]
    assert phases == [
        ("2026-11-24T22:00:20Z", "deploy phase backup ended"),
        ("2026-11-24T22:00:22Z", "deploy phase stop ended"),
        ("2026-11-24T22:00:27Z", "deploy phase migrate ended"),
    ]


def test_recorded_phase_ends_are_the_timeline_s_times() -> None:
    record = failed_migration(
        phase_ends={
            "backup": "2026-11-24T22:00:21Z",
            "stop": "2026-11-24T22:00:30Z",
            "migrate": "2026-11-24T22:00:36Z",
        }
    )
    report = incident.build(config(), environment="production", records=[OLD, record])
    texts = [e.text for e in report.timeline]
    assert texts.index("deploy phase stop ended") < texts.index("deploy phase migrate ended")
    assert ("2026-11-24T22:00:30Z", "deploy phase stop ended") in [
        (e.at, e.text) for e in report.timeline
    ]


def test_a_failed_migration_whose_previous_release_serves_again_is_not_called_not_rolled_back() -> (
    None
):
    report = incident.build(config(), environment="production", records=[OLD, failed_migration()])
    markdown = incident.render_markdown(report)
    assert "NOT rolled back" not in markdown
    assert "**Status**: failed — the previous release (svc:1.0) serves again" in markdown
    assert report.previous_serving == "svc:1.0"
    assert "serves again" in report.summary


def test_a_release_that_did_not_come_back_is_still_not_rolled_back() -> None:
    record = failed_migration()
    record["notes"] = ["the previous release did NOT come back: health check failed"]
    markdown = incident.render_markdown(
        incident.build(config(), environment="production", records=[OLD, record])
    )
    assert "— NOT rolled back" in markdown


def test_the_logs_around_the_failure_hold_the_failed_migration_s_output() -> None:
    report = incident.build(
        config(),
        environment="production",
        records=[OLD, failed_migration()],
        logs=["app line 1"],
        logs_source="fetched now from svc-app-1",
    )
    assert report.logs[:2] == (
        "INFO  [alembic.runtime.migration] Running upgrade 0001 -> 0002, add column",
        'sqlalchemy.exc.ProgrammingError: column "x" already exists',
    )
    assert report.logs[-1] == "app line 1"
    assert report.logs_source.startswith("the failed command's output, kept in release record")
    assert 'column "x" already exists' in incident.render_markdown(report)


def test_a_failed_migration_s_output_is_kept_masked(monkeypatch: Any) -> None:
    from deploytools.steps import migrate

    monkeypatch.setenv("DB_PASSWORD", "hunter2-secret-value")
    facts = {
        "stderr": "connecting with hunter2-secret-value\nERROR boom\n",
        "stdout": "\n".join(f"line {i}" for i in range(100)),
    }
    tail = migrate.output_tail(facts, config())
    assert len(tail) == migrate.OUTPUT_TAIL_LINES
    assert tail[-1] == "line 99"
    whole = migrate.output_tail({"stderr": facts["stderr"]}, config())
    assert whole[0] == "connecting with ***"
    assert "hunter2-secret-value" not in "\n".join(whole)
