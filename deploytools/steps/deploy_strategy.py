"""Which strategy a deploy uses, and why: `--strategy auto` (the default) picks rolling when it
is safe and possible, recreate otherwise, and says which rule decided.

    rolling   an app serves in the environment, AND the image declares its migrations
              expand-only (image label deploytools.migrations.expand-only = "true",
              migrate.image_info) AND the environment's proxy can switch the traffic
              (deploy_rolling.proxy_refusal)
    recreate  otherwise: the old release stops before the migration, a maintenance window
              (announced in production, maintenance.py); where nothing serves yet (a first
              deploy), nothing stops: the release is migrated and started, with no downtime
              and nothing to switch from, and the reason says so (NOTHING_SERVING)

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
    asked: str,
    info: ImageInfo,
    proxy_refusal: Callable[[], UsageError | None],
    *,
    serving: bool,
) -> StrategyChoice:
    """The strategy for deploying `info`.

    :param asked: "auto", or a strategy's name (taken as asked).
    :param info: the release image (its expand-only label).
    :param proxy_refusal: why the environment's proxy cannot switch the traffic, or None when
        it can (deploy_rolling.proxy_refusal); called only when the image could roll.
    :param serving: whether an app container runs in the environment (nothing to switch
        from otherwise: auto recreates, which then stops nothing).
    """
    if asked != AUTO:
        return StrategyChoice(asked, asked, f"asked for (--strategy {asked})")
    if not serving:
        return StrategyChoice(AUTO, RECREATE, NOTHING_SERVING)
    why_not = image_reason(info)
    if why_not is not None:
        return StrategyChoice(AUTO, RECREATE, why_not)
    refused = proxy_refusal()
    if refused is not None:
        reason = str(refused.facts.get("reason") or refused.message)
        return StrategyChoice(AUTO, RECREATE, f"expand-only, but {reason}")
    return StrategyChoice(AUTO, ROLLING, "expand-only, the proxy switches the traffic")


def choose_on_swarm(asked: str, info: ImageInfo, *, serving: bool) -> StrategyChoice:
    """The strategy for deploying `info` to a Swarm environment (deploy_swarm.py,
    deploy_swarm_recreate.py): as `choose`, where Swarm's rolling update stands for the
    proxy's switch (deploytools' proxy on the manager always fronts it).

    :param serving: whether the stack's app service exists. Where it does not (a first
        deploy) there is nothing to stop: the stack is deployed with the release, the rolling
        path's first deploy, whatever was asked.

    An explicit `rolling` is taken as asked: the rolling path then refuses a release not
    declared expand-only (the old tasks would serve from the migrated schema) rather than
    turning it into an outage nobody asked for.
    """
    if not serving:
        return StrategyChoice(asked, ROLLING, NOTHING_SERVING)
    if asked != AUTO:
        return StrategyChoice(asked, asked, f"asked for (--strategy {asked})")
    why_not = image_reason(info)
    if why_not is not None:
        return StrategyChoice(AUTO, RECREATE, why_not)
    return StrategyChoice(AUTO, ROLLING, "expand-only, Swarm's update behind the proxy")


#: Why auto recreates where no app runs: what happens, not a rolling "switch" from nothing.
NOTHING_SERVING = (
    "nothing serves there yet: the release is migrated and started, with nothing to stop "
    "and no traffic to switch from"
)
