"""`deploy --strategy auto`: rolling exactly when the image says expand-only AND the proxy can
switch, recreate otherwise, with the reason recorded; an explicit strategy is taken as asked."""

from __future__ import annotations

import pytest

from deploytools.errors import UsageError
from deploytools.steps import deploy_strategy
from deploytools.steps.migrate import ImageInfo

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

    choice = deploy_strategy.choose("auto", info(label), proxy_refusal)
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
    choice = deploy_strategy.choose("auto", info(True), lambda: broken)
    assert choice.strategy == "recreate"
    assert (
        choice.reason
        == "expand-only, but the proxy cannot switch traffic: the proxy has no server blue"
    )


def test_the_report_line_of_the_demo_reads_rolling_expand_only() -> None:
    choice = deploy_strategy.choose("auto", info(True), lambda: None)
    assert choice.summary.startswith("rolling, expand-only")


@pytest.mark.parametrize("asked", ["rolling", "recreate"])
@pytest.mark.parametrize("label", [True, False, None])
def test_an_explicit_strategy_is_taken_as_asked_and_asks_nothing(
    asked: str, label: bool | None
) -> None:
    def proxy_refusal() -> UsageError | None:
        raise AssertionError("not asked for an explicit strategy: the strategy admits itself")

    choice = deploy_strategy.choose(asked, info(label), proxy_refusal)
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
