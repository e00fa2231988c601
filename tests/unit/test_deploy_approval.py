"""A deploy to an environment with requires_approval needs a person: asked on a terminal, given
with --yes (or by the pipeline's gate); with neither, exit 2 before anything is touched."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.errors import ApprovalRequired, ExitCode
from deploytools.steps import deploy as deploy_step
from deploytools.steps import deploy_strategy
from deploytools.steps.app_service import RunningApp
from deploytools.steps.migrate import ImageInfo
from deploytools.store.environment import EnvironmentStore
from deploytools.store.records import ReleaseRecord
from tests.fakes.memory_store import MemoryStore
from tests.helpers.deploy_toml import PROJECT

REPO_ROOT = Path(__file__).resolve().parents[2]

#: production's engine is tcp://127.0.0.1:9 (nothing listens): a command that got as far as the
#: engine fails with exit 3, so exit 2 shows it stopped before touching anything.
CONFIG = PROJECT + dedent(
    """
    [environments.staging]
    docker_host = "tcp://127.0.0.1:9"
    compose_project = "svc-staging"
    base_url = "http://127.0.0.1:8081"

    [environments.production]
    docker_host = "tcp://127.0.0.1:9"
    compose_project = "svc-production"
    base_url = "http://127.0.0.1:8080"
    requires_approval = true
    """
)


def _cli(tmp_path: Path, *args: str) -> Any:
    path = tmp_path / "deploy.toml"
    path.write_text(CONFIG)
    return CliRunner().invoke(cli, ["--config", str(path), "--json", "deploy", *args])


def test_no_terminal_and_no_yes_is_a_usage_error_that_touched_nothing(tmp_path: Path) -> None:
    result = _cli(tmp_path, "--env", "production", "--image", "x:1")
    assert result.exit_code == ExitCode.USAGE, result.output
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ApprovalRequired"
    assert "need a person's approval" in error["message"] and "no terminal" in error["message"]
    assert error["untouched"].startswith("nothing was touched")
    assert "--yes" in error["hint"]


def test_yes_approves_and_the_deploy_goes_on_to_the_engine(tmp_path: Path) -> None:
    result = _cli(tmp_path, "--env", "production", "--image", "x:1", "--yes")
    assert result.exit_code == ExitCode.ENVIRONMENT, result.output
    assert json.loads(result.stdout)["error"]["type"] != "ApprovalRequired"


def test_an_environment_without_requires_approval_asks_nothing(tmp_path: Path) -> None:
    result = _cli(tmp_path, "--env", "staging", "--image", "x:1")
    assert result.exit_code == ExitCode.ENVIRONMENT, result.output


def test_the_step_refuses_before_opening_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the environment was opened")

    monkeypatch.setattr(deploy_step, "open_environment", never)
    ctx = StepContext(config=load_config(REPO_ROOT / "deploy.toml"))  # production: approval
    with pytest.raises(ApprovalRequired) as caught:
        deploy_step.run(ctx, environment="production", image="x:1")
    assert caught.value.exit_code == ExitCode.USAGE


class _Target:
    name = "production"

    def __init__(self, running: RunningApp | None) -> None:
        self.running = running


def _session(running: RunningApp | None, records: list[ReleaseRecord]) -> Any:
    history = EnvironmentStore(MemoryStore(), "production")  # type: ignore[arg-type]
    for record in records:
        history.save_release(record)
    ctx = StepContext(config=load_config(REPO_ROOT / "deploy.toml"))
    return SimpleNamespace(ctx=ctx, target=_Target(running), history=history)


INFO = ImageInfo(ref="rbac:1.15.2", id="sha256:new", version="1.15.2", expand_only=None)
OLD = RunningApp(image="rbac:1.15.1", image_id="sha256:old", healthy=True)


def _ask(
    monkeypatch: pytest.MonkeyPatch,
    choice: deploy_strategy.StrategyChoice,
    *,
    answer: bool,
    running: RunningApp | None = OLD,
    records: list[ReleaseRecord] | None = None,
) -> tuple[list[str], str | None]:
    monkeypatch.setattr(deploy_step, "running_app", lambda target: target.running)
    asked: list[str] = []

    def confirm(question: str) -> bool:
        asked.append(question)
        return answer

    approved = deploy_step._approval(_session(running, records or []), INFO, choice, confirm)
    return asked, approved


RECREATE = deploy_strategy.StrategyChoice(
    "auto", "recreate", "its migrations are not declared expand-only"
)


def test_the_question_says_the_strategy_why_and_the_expected_downtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    measured = ReleaseRecord(
        id="0004", environment="production", kind="deploy", who="t",
        started="2026-01-01T00:00:00Z", image="rbac:1.15.1", strategy="recreate",
        outcome="succeeded", timings={"backup": 3.0, "stop": 1.5, "migrate": 0.5, "start": 1.0,
                                      "healthy": 1.2},
    )  # fmt: skip
    asked, approved = _ask(monkeypatch, RECREATE, answer=True, records=[measured])
    [question] = asked
    assert "rbac:1.15.2" in question and "rbac:1.15.1" in question
    assert "recreate strategy (its migrations are not declared expand-only)" in question
    assert "about 5 s (the last recreate here, release 0004, was down 4.2 s)" in question
    assert question.endswith("production requires approval")
    assert approved is not None and "(--yes)" not in approved


def test_a_rolling_deploy_announces_no_downtime(monkeypatch: pytest.MonkeyPatch) -> None:
    rolling = deploy_strategy.StrategyChoice(
        "auto", "rolling", "expand-only, the proxy switches the traffic"
    )
    [question], _ = _ask(monkeypatch, rolling, answer=True)
    assert "rolling strategy (expand-only, the proxy switches the traffic)" in question
    assert "down" not in question


def test_declining_stops_with_nothing_deployed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ApprovalRequired, match="was not approved") as caught:
        _ask(monkeypatch, RECREATE, answer=False)
    assert caught.value.facts["declined"] is True
    assert (caught.value.untouched or "").startswith("nothing was deployed")


def test_the_image_already_serving_is_not_asked_about(monkeypatch: pytest.MonkeyPatch) -> None:
    serving = RunningApp(image="rbac:1.15.2", image_id="sha256:new", healthy=True)
    asked, approved = _ask(monkeypatch, RECREATE, answer=False, running=serving)
    assert asked == [] and approved is None
