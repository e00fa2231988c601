"""The incident report from recorded releases: which release, its timeline, what failed with its
values, what was rolled back (image, database, writes dropped), logs, contacts, questions."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from deploytools.config import Config, parse_config
from deploytools.errors import UsageError
from deploytools.steps import incident
from deploytools.steps.report import load_evidence
from deploytools.store.records import ReleaseRecord

CONFIG = textwrap.dedent(
    """
    [project]
    name = "svc"
    image_repository = "svc"
    compose_files = ["docker-compose.prod.yml"]
    app_service = "app"
    database_service = "db"
    migration_command = ["alembic", "upgrade", "head"]

    [environments.production]
    compose_project = "svc-production"
    base_url = "http://127.0.0.1:8080"

    [contacts]
    slack_channel = "#svc-incidents"

    [[contacts.tiers]]
    name = "on-call"
    people = ["@alice"]
    """
)


def config() -> Config:
    return parse_config(CONFIG, Path("deploy.toml"))


def rec(id: str, kind: str, image: str, started: str, **kw: Any) -> dict[str, Any]:
    record = ReleaseRecord(
        id=id, environment="production", kind=kind, who="ci", started=started, image=image, **kw
    )
    return dataclasses.asdict(record)


V1 = rec(
    "0001",
    "deploy",
    "svc:1.0",
    "2026-11-20T22:00:00Z",
    outcome="succeeded",
    finished="2026-11-20T22:01:00Z",
    revision_after="0001",
    version="1.0",
)
V2 = rec(
    "0002",
    "deploy",
    "svc:1.1",
    "2026-11-24T22:00:00Z",
    outcome="succeeded",
    finished="2026-11-24T22:01:30Z",
    previous="0001",
    backup_id="b-1",
    revision_before="0001",
    revision_after="0002",
    version="1.1",
    timings={"backup": 20.0, "stop": 2.0, "migrate": 5.0, "start": 3.0, "healthy": 60.0},
)
MANUAL_BACK = rec("0003", "rollback", "svc:1.0", "2026-11-24T22:40:00Z", outcome="succeeded",
                  finished="2026-11-24T22:41:00Z", previous="0002", previous_image="svc:1.1",
                  restored_backup="b-1", revision_before="0002", revision_after="0001",
                  timings={"stop": 2.0, "restore": 30.0, "start": 3.0, "healthy": 20.0},
                  notes=["manual rollback from 0002 (svc:1.1)",
                         "rollback: restoring backup b-1 (taken 2026-11-24T21:59:00Z, revision "
                         "0001) drops 3 rows written since"])  # fmt: skip
UNHEALTHY = rec(
    "0004",
    "deploy",
    "svc:1.2",
    "2026-11-25T22:00:00Z",
    outcome="rolled-back",
    finished="2026-11-25T22:03:00Z",
    previous="0003",
    revision_before="0001",
    revision_after="0001",
    version="1.2",
    error="app did not become healthy within 120 s: health check: curl exit 7",
    notes=["rolled back automatically by release 0005"],
)
AUTO_BACK = rec(
    "0005",
    "rollback",
    "svc:1.0",
    "2026-11-25T22:02:00Z",
    outcome="succeeded",
    finished="2026-11-25T22:02:40Z",
    previous="0004",
    previous_image="svc:1.2",
    revision_before="0001",
    revision_after="0001",
    notes=["automatic rollback from 0004 (svc:1.2)"],
)
FAILED_MIGRATION = rec(
    "0006",
    "migrate",
    "svc:1.3",
    "2026-11-26T22:00:00Z",
    outcome="failed",
    finished="2026-11-26T22:00:09Z",
    error="migration 0003 failed: lock timeout",
)
# fmt: on

RECORDS = [V1, V2, MANUAL_BACK, UNHEALTHY, AUTO_BACK]


def test_default_is_the_newest_incident_and_its_rollback() -> None:
    failed, rollback = incident.choose(RECORDS, None)
    assert failed["id"] == "0004" and rollback is not None and rollback["id"] == "0005"
    # Naming the rollback record finds the release it rolled back.
    failed, rollback = incident.choose(RECORDS, "3")
    assert failed["id"] == "0002" and rollback is not None and rollback["id"] == "0003"
    # A failure without a rollback.
    failed, rollback = incident.choose([*RECORDS, FAILED_MIGRATION], None)
    assert failed["id"] == "0006" and rollback is None


def test_nothing_to_report_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no failed release and no rollback"):
        incident.choose([V1, V2], None)
    with pytest.raises(UsageError, match="no release 9"):
        incident.choose(RECORDS, "9")


def test_a_manual_rollback_with_a_restore_says_what_it_dropped() -> None:
    report = incident.build(config(), environment="production", records=RECORDS, release_id="2")
    b = report.rolled_back
    assert b is not None
    assert (b.image_from, b.image_to) == ("svc:1.1", "svc:1.0")
    assert b.database == "restored from backup b-1: revision 0002 -> 0001"
    assert "drops 3 rows written since" in b.writes_dropped
    texts = [e.text for e in report.timeline]
    assert texts[0].startswith("deploy 0002 of svc:1.1 began")
    assert "deploy phase healthy ended" in texts
    assert texts[-1] == "rollback 0003 ended: succeeded"
    # The phases' ends follow from the start and the durations: backup at 22:00:20.
    assert ("2026-11-24T22:00:20Z", "deploy phase backup ended") in [
        (e.at, e.text) for e in report.timeline
    ]


def test_an_automatic_rollback_keeps_every_write_and_names_the_error() -> None:
    report = incident.build(
        config(), environment="production", records=RECORDS, logs=["line 1", "line 2"],
        logs_source="fetched now from svc-app-1",
    )  # fmt: skip
    assert report.release_id == "0004"
    assert report.error and "did not become healthy" in report.error
    assert report.rolled_back is not None
    assert report.rolled_back.writes_dropped == "none: no restore, every write was kept"
    assert report.rolled_back.database.startswith("not restored")
    markdown = incident.render_markdown(report)
    assert markdown.startswith("# Incident report: svc production, release 0004 (v1.2)")
    assert "**Status**: rolled-back — rolled back" in markdown
    assert "- **Image**: `svc:1.2` → `svc:1.0`" in markdown
    assert "Source: fetched now from svc-app-1." in markdown
    assert "```\nline 1\nline 2\n```" in markdown
    assert "1. on-call (at once): @alice" in markdown
    assert "- Slack: #svc-incidents" in markdown
    assert "- [ ] Why did the release fail" in markdown
    assert "record's error: app did not become healthy" in markdown


def test_failed_checks_with_their_values_and_stored_log_lines_come_from_the_results(
    tmp_path: Path,
) -> None:
    result = {
        "ok": False,
        "error": {"facts": {"report": {
            "suite": "verify", "environment": "production", "finished": "2026-11-25T22:01:30Z",
            "results": [
                {"name": "api p95", "verdict": "fail", "measured": "p95 412 ms (n=300)",
                 "threshold": "< 200 ms", "detail": "the whole range is over"},
                {"name": "health", "verdict": "pass", "measured": "12 ms", "threshold": "< 100"},
                {"name": "log scan", "verdict": "fail", "measured": "2 lines", "threshold": "0",
                 "data": {"lines": ['{"level": "ERROR", "msg": "boom"}', "Traceback (most"]}},
            ],
        }}},
    }  # fmt: skip
    (tmp_path / "verify.json").write_text(json.dumps(result))
    evidence = load_evidence([tmp_path / "verify.json"])
    report = incident.build(
        config(), environment="production", records=RECORDS, evidence=evidence,
        logs=["fetched line"], logs_source="fetched",
    )  # fmt: skip
    assert [(c.name, c.measured, c.threshold) for c in report.failed_checks] == [
        ("api p95", "p95 412 ms (n=300)", "< 200 ms"),
        ("log scan", "2 lines", "0"),
    ]
    assert report.logs == ('{"level": "ERROR", "msg": "boom"}', "Traceback (most")
    assert report.logs_source.startswith("stored by the log scan")
    assert ("2026-11-25T22:01:30Z", "verify failed") in [(e.at, e.text) for e in report.timeline]
    markdown = incident.render_markdown(report)
    assert "| verify | api p95 | p95 412 ms (n=300) | < 200 ms | the whole range is over |" in (
        markdown
    )
    data = json.loads(incident.dumps(report))
    assert data["failed_checks"][0]["name"] == "api p95"
    assert data["rolled_back"]["record_id"] == "0005"


def test_a_failure_that_was_not_rolled_back_says_so() -> None:
    report = incident.build(
        config(), environment="production", records=[*RECORDS, FAILED_MIGRATION]
    )
    assert report.rolled_back is None
    markdown = incident.render_markdown(report)
    assert "NOT rolled back" in markdown
    assert "Nothing: the release was not rolled back." in markdown
    assert "Source: no logs were available." in markdown


def test_a_rollback_without_restore_says_why_from_the_record() -> None:
    # 0004 changed no revision: that, not a guess, is why nothing was restored.
    report = incident.build(config(), environment="production", records=RECORDS)
    assert report.rolled_back is not None
    assert report.rolled_back.database.endswith("(the release's deploy changed no revision)")
    expand_only = {**UNHEALTHY, "expand_only": True, "revision_after": "0002"}
    report = incident.build(
        config(), environment="production", records=[V1, V2, MANUAL_BACK, expand_only, AUTO_BACK]
    )
    assert report.rolled_back is not None
    assert "the release's migrations were expand-only" in report.rolled_back.database


def _interrupted(expand_only: bool | None) -> dict[str, Any]:
    return rec(
        "0006", "deploy", "svc:1.3", "2026-11-26T22:00:00Z", outcome="interrupted",
        previous="0002", backup_id="b-2", version="1.3", expand_only=expand_only,
        revision_before="0002", revision_after="0003",
    )  # fmt: skip


def test_not_rolled_back_an_expand_only_release_gives_the_rollback_without_restore() -> None:
    report = incident.build(
        config(), environment="production", records=[*RECORDS, _interrupted(True)]
    )
    assert report.rollback_command == "deploytools rollback --env production --to 1.1"
    markdown = incident.render_markdown(report)
    assert "```bash\ndeploytools rollback --env production --to 1.1\n```" in markdown
    assert "no restore, no write is lost." in markdown


def test_not_rolled_back_otherwise_the_rollback_restores_and_drops_writes() -> None:
    report = incident.build(
        config(), environment="production", records=[*RECORDS, _interrupted(None)]
    )
    assert report.rollback_command == (
        "deploytools rollback --env production --to 1.1 --restore-db"
    )
    assert "restores backup b-2, which drops every write made since it was taken" in (
        report.rollback_note
    )
