"""`deploy --strategy auto`: rolling exactly when the image says expand-only AND the proxy can
switch, recreate otherwise, with the reason recorded; an explicit strategy is taken as asked."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.errors import UsageError
from deploytools.steps import deploy as deploy_step
from deploytools.steps import deploy_strategy
from deploytools.steps.migrate import ImageInfo
from deploytools.store.environment import EnvironmentStore
from tests.fakes.memory_store import MemoryStore

REPO_ROOT = Path(__file__).resolve().parents[2]

LABEL = "deploytools.migrations.expand-only"
NO_PROXY = UsageError(
    "rolling deploy to production refused: ...",
    facts={"reason": 'no proxy to switch traffic with (no "proxy" service in the Compose files)'},
)


def info(label: bool | None) -> ImageInfo:
    return ImageInfo(ref="rbac:1.15.2", id="sha256:abc", version="1.15.2", expand_only=label)


@pytest.mark.parametrize(
    ("label", "proxy_ok", "strategy", "reason"),
    [
        (True, True, "rolling", "expand-only, the proxy switches the traffic"),
        (True, False, "recreate", "expand-only, but no proxy to switch traffic with"),
        (False, True, "recreate", f'not expand-only (image label {LABEL} = "false")'),
        (False, False, "recreate", "not expand-only"),
        (None, True, "recreate", "not declared expand-only (no image label"),
        (None, False, "recreate", "not declared expand-only (no image label"),
    ],
    ids=[
        "label-true-proxy", "label-true-no-proxy", "label-false-proxy", "label-false-no-proxy",
        "label-missing-proxy", "label-missing-no-proxy",
    ],
)  # fmt: skip
def test_auto_chooses_rolling_only_for_expand_only_behind_a_proxy_that_can_switch(
    label: bool | None, proxy_ok: bool, strategy: str, reason: str
) -> None:
    asked: list[bool] = []

    def proxy_refusal() -> UsageError | None:
        asked.append(True)
        return None if proxy_ok else NO_PROXY

    choice = deploy_strategy.choose("auto", info(label), proxy_refusal, serving=True)
    assert (choice.asked, choice.strategy) == ("auto", strategy)
    assert reason in choice.reason
    assert choice.summary == f"{strategy}, {choice.reason}"
    # The proxy is asked (and started, for real) only for a release that could roll.
    assert asked == ([True] if label is True else [])


def test_a_proxy_that_cannot_switch_says_why_in_the_reason() -> None:
    broken = UsageError(
        "rolling deploy to production refused: the proxy has no server blue",
        facts={"reason": "the proxy cannot switch traffic: the proxy has no server blue"},
    )
    choice = deploy_strategy.choose("auto", info(True), lambda: broken, serving=True)
    assert choice.strategy == "recreate"
    assert (
        choice.reason
        == "expand-only, but the proxy cannot switch traffic: the proxy has no server blue"
    )


def test_the_report_line_of_the_demo_reads_rolling_expand_only() -> None:
    choice = deploy_strategy.choose("auto", info(True), lambda: None, serving=True)
    assert choice.summary.startswith("rolling, expand-only")


@pytest.mark.parametrize("asked", ["rolling", "recreate"])
@pytest.mark.parametrize("label", [True, False, None])
def test_an_explicit_strategy_is_taken_as_asked_and_asks_nothing(
    asked: str, label: bool | None
) -> None:
    def proxy_refusal() -> UsageError | None:
        raise AssertionError("not asked for an explicit strategy: the strategy admits itself")

    choice = deploy_strategy.choose(asked, info(label), proxy_refusal, serving=True)
    assert (choice.asked, choice.strategy) == (asked, asked)
    assert choice.reason == f"asked for (--strategy {asked})"


def test_auto_is_the_default_of_the_step_and_of_the_cli() -> None:
    import inspect

    from deploytools.cli.deploy_cmd import deploy
    from deploytools.steps import deploy as deploy_step

    assert inspect.signature(deploy_step.run).parameters["strategy"].default == "auto"
    [option] = [p for p in deploy.params if p.name == "strategy"]
    assert option.default == "auto"
    assert list(option.type.choices) == ["auto", "recreate", "rolling"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("label", [True, False, None])
def test_auto_into_an_environment_where_nothing_serves_starts_the_release_and_says_so(
    label: bool | None,
) -> None:
    """Nothing to switch from and nothing to stop: no rolling (whose record would say "the
    proxy switches the traffic") and no downtime; the reason says what really happens."""

    def proxy_refusal() -> UsageError | None:
        raise AssertionError("nothing serves: the proxy has no traffic to switch")

    choice = deploy_strategy.choose("auto", info(label), proxy_refusal, serving=False)
    assert (choice.asked, choice.strategy) == ("auto", "recreate")
    assert choice.reason == deploy_strategy.NOTHING_SERVING
    assert "nothing serves" in choice.reason and "nothing to stop" in choice.reason


@pytest.mark.parametrize("asked", ["rolling", "recreate"])
def test_an_explicit_strategy_into_an_empty_environment_is_still_taken_as_asked(
    asked: str,
) -> None:
    choice = deploy_strategy.choose(asked, info(True), lambda: None, serving=False)
    assert (choice.asked, choice.strategy) == (asked, asked)


def test_the_deploy_step_tells_auto_whether_an_app_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deploy.run asks the environment (running_app) before choosing: an expand-only release
    into an environment where nothing runs is started, not "rolled" in."""
    ctx = StepContext(config=load_config(REPO_ROOT / "deploy.toml"))
    history = EnvironmentStore(MemoryStore(), "staging")  # type: ignore[arg-type]
    session = SimpleNamespace(
        ctx=ctx,
        target=SimpleNamespace(name="staging", engine=object()),
        history=history,
        progress=lambda message: None,
        lock=None,
    )

    @contextlib.contextmanager
    def opened(*args: object, **kwargs: object) -> Iterator[Any]:
        yield session

    chosen: list[deploy_strategy.StrategyChoice] = []

    def deployed(*args: object, choice: deploy_strategy.StrategyChoice, **kwargs: object) -> Any:
        chosen.append(choice)
        return None

    def never() -> None:
        raise AssertionError("the proxy was asked: nothing serves")

    monkeypatch.setattr(deploy_step, "open_environment", opened)
    monkeypatch.setattr(deploy_step.migrate_step, "image_info", lambda engine, image: info(True))
    monkeypatch.setattr(deploy_step, "running_app", lambda target: None)
    monkeypatch.setattr(deploy_step.deploy_rolling, "proxy_refusal", lambda s: never())
    monkeypatch.setattr(deploy_step, "_deploy", deployed)
    deploy_step.run(ctx, environment="staging", image="rbac:1.15.2")
    [choice] = chosen
    assert (choice.strategy, choice.reason) == ("recreate", deploy_strategy.NOTHING_SERVING)
