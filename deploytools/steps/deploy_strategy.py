"""Which strategy a deploy uses, and why: `--strategy auto` (the default) picks rolling when it
is safe and possible, recreate otherwise, and says which rule decided.

    rolling   the image declares its migrations expand-only (image label
              deploytools.migrations.expand-only = "true", migrate.image_info) AND the
              environment's proxy can switch the traffic (deploy_rolling.proxy_refusal)
    recreate  otherwise: the old release stops before the migration, a maintenance window
              (announced in production, maintenance.py)

Both rules are the ones the rolling strategy refuses by, read here as predicates: auto never
chooses a deploy that rolling would refuse. The image rule is read first, so the proxy is not
asked (nor started) for a release that could not roll anyway. An explicit `--strategy` is
taken as asked; rolling then still refuses what it cannot do (exit 2, nothing done).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deploytools.errors import UsageError
from deploytools.steps.migrate import EXPAND_ONLY_LABEL, ImageInfo

AUTO = "auto"
ROLLING = "rolling"
RECREATE = "recreate"


@dataclass(frozen=True)
class StrategyChoice:
    """The strategy a deploy runs with and why, as the release record and the report say it."""

    asked: str  # auto | rolling | recreate
    strategy: str  # rolling | recreate
    reason: str

    @property
    def summary(self) -> str:
        """ "rolling, expand-only, the proxy switches the traffic": strategy, then why."""
        return f"{self.strategy}, {self.reason}"


def image_reason(info: ImageInfo) -> str | None:
    """Why the image may not roll (its migrations), or None when it declares them
    expand-only."""
    if info.expand_only is True:
        return None
    if info.expand_only is False:
        return f'not expand-only (image label {EXPAND_ONLY_LABEL} = "false")'
    return f"its migrations are not declared expand-only (no image label {EXPAND_ONLY_LABEL})"


def choose(
    asked: str, info: ImageInfo, proxy_refusal: Callable[[], UsageError | None]
) -> StrategyChoice:
    """The strategy for deploying `info`.

    :param asked: "auto", or a strategy's name (taken as asked).
    :param info: the release image (its expand-only label).
    :param proxy_refusal: why the environment's proxy cannot switch the traffic, or None when
        it can (deploy_rolling.proxy_refusal); called only when the image could roll.
    """
    if asked != AUTO:
        return StrategyChoice(asked, asked, f"asked for (--strategy {asked})")
    why_not = image_reason(info)
    if why_not is not None:
        return StrategyChoice(AUTO, RECREATE, why_not)
    refused = proxy_refusal()
    if refused is not None:
        reason = str(refused.facts.get("reason") or refused.message)
        return StrategyChoice(AUTO, RECREATE, f"expand-only, but {reason}")
    return StrategyChoice(AUTO, ROLLING, "expand-only, the proxy switches the traffic")
