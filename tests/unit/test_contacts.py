"""[contacts]: in the config, in failure and rollback notices (not in others), in the report."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytools import contacts
from deploytools.config import Config, parse_config
from deploytools.context import StepContext
from deploytools.errors import ConfigError
from deploytools.steps import notify
from tests.fakes.webhook_server import FakeWebhooks
from tests.helpers.deploy_toml import PROJECT

BASE = PROJECT + textwrap.dedent(
    """
    [environments.production]
    compose_project = "svc-production"
    base_url = "http://127.0.0.1:8080"
    """
)

CONTACTS = textwrap.dedent(
    """
    [contacts]
    slack_channel = "#svc-deploys"
    status_page = "https://status.example.com"
    email_list = "svc-stakeholders@example.com"

    [[contacts.tiers]]
    name = "on-call engineer"
    people = ["@alice", "+1 555 0100"]

    [[contacts.tiers]]
    name = "engineering manager"
    people = ["@bob"]
    after_min = 15
    """
)


def config(extra: str = CONTACTS) -> Config:
    return parse_config(BASE + extra, Path("deploy.toml"))


@pytest.fixture
def hooks() -> Iterator[FakeWebhooks]:
    with FakeWebhooks() as server:
        yield server


def test_tiers_in_order_with_their_delay_and_the_channels() -> None:
    c = config().contacts
    assert contacts.tier_lines(c) == [
        "1. on-call engineer (at once): @alice, +1 555 0100",
        "2. engineering manager (after 15 min): @bob",
    ]
    assert contacts.channel_lines(c) == [
        "Slack: #svc-deploys",
        "Status page: https://status.example.com",
        "Email: svc-stakeholders@example.com",
    ]
    assert "Escalation, in order:" in contacts.markdown(c)
    assert "No contacts configured" in contacts.markdown(config("").contacts)


def test_a_tier_without_people_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"contacts.tiers\[0\]"):
        config('[[contacts.tiers]]\nname = "nobody"\npeople = []\n')


@pytest.mark.parametrize("event", ["failure", "rollback"])
def test_failure_notices_name_the_escalation(hooks: FakeWebhooks, event: str) -> None:
    environ = {
        "SLACK_WEBHOOK_URL": hooks.url + "/slack",
        "STATUS_PAGE_HOOK_URL": hooks.url + "/status",
    }
    notify.run(
        StepContext(config=config()),
        event=event,
        environment="production",
        environ=environ,
        attachment="# Incident report\n" + "x" * 5000,
    )
    slack, status = hooks.received
    text = slack.json["text"]
    assert "1. on-call engineer (at once): @alice" in text
    assert "Slack: #svc-deploys" in text
    assert "Email: svc-stakeholders@example.com" in text
    attached = slack.json["blocks"][1]["text"]["text"]
    assert attached.startswith("```# Incident report")
    assert "cut; the whole report is in the run" in attached
    assert len(attached) <= 3000
    assert "2. engineering manager (after 15 min): @bob" in status.json["contacts"]
    assert status.json["report"].startswith("# Incident report")


def test_a_success_notice_calls_nobody(hooks: FakeWebhooks) -> None:
    notify.run(
        StepContext(config=config()),
        event="success",
        environment="production",
        environ={"STATUS_PAGE_HOOK_URL": hooks.url + "/status"},
    )
    (status,) = hooks.received
    assert "contacts" not in status.json


def test_the_runbook_report_shows_the_contacts_only_when_configured() -> None:
    from deploytools.steps import report

    assert report.contacts_markdown(config("")) == ""
    assert "@alice" in report.contacts_markdown(config())


def test_notify_cli_attaches_a_file_and_refuses_a_missing_one(
    hooks: FakeWebhooks, tmp_path: Path
) -> None:
    import json

    from click.testing import CliRunner

    from deploytools.cli import cli

    path = tmp_path / "deploy.toml"
    path.write_text(BASE + CONTACTS)
    report = tmp_path / "incident.md"
    report.write_text("# Incident report: svc production, release 0004\n")
    env = {"SLACK_WEBHOOK_URL": hooks.url + "/slack", "STATUS_PAGE_HOOK_URL": ""}
    args = ["--config", str(path), "--json", "notify", "--event", "rollback", "--env", "production"]
    sent = CliRunner().invoke(cli, [*args, "--attach", str(report)], env=env)
    assert sent.exit_code == 0, sent.output
    (slack,) = hooks.received
    assert "# Incident report: svc production" in slack.json["blocks"][1]["text"]["text"]
    missing = CliRunner().invoke(cli, [*args, "--attach", str(tmp_path / "none.md")], env=env)
    assert missing.exit_code == 2, missing.output
    assert "no such file" in json.loads(missing.stdout)["error"]["message"]
