"""A recreate deploy's maintenance window: announced in production before anything stops.

The runbook's "notify stakeholders of the maintenance window" belongs to the deploy that makes
one: a recreate stops the app, so users see errors from the stop until the new release is
healthy. A rolling deploy makes no window and announces none.

- Where: production (the environment named so) and every environment whose deploys need
  approval (`requires_approval`), the same rule as the release tag's (release_source.py).
- What: `notify maintenance-window` (steps/notify.py) with the expected downtime, which is the
  last successful recreate's measured outage in this environment (its stop, migrate, start and
  healthy phases), else DEFAULT_DOWNTIME_S.
- Only where notifications are configured (a Slack or status-page URL variable is set);
  otherwise the record says that nobody was told.
- A hook that fails is a warning in the record and the progress, and the deploy goes on: a
  release must not wait for Slack (notify's own rule). With `notifications.required = true` it
  stops the deploy instead, before anything stopped (EnvironmentUnreachable, exit 3): a team
  that promised its users notice of every window gets no unannounced one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from deploytools.config import Config
from deploytools.context import StepContext
from deploytools.steps import notify as notify_step
from deploytools.store.records import ReleaseRecord

#: The strategies a release record names that make a maintenance window (one engine, Swarm).
RECREATES = ("recreate", "swarm-recreate")
#: The phases of a recreate during which nothing serves.
OUTAGE_PHASES = ("stop", "migrate", "start", "healthy")
#: The window announced when this environment has no measured recreate yet.
DEFAULT_DOWNTIME_S = 60.0
PRODUCTION = "production"


@dataclass(frozen=True)
class ExpectedDowntime:
    seconds: float
    basis: str  # where the figure comes from, for people

    @property
    def text(self) -> str:
        return f"about {math.ceil(self.seconds)} s ({self.basis})"


def announced_in(config: Config, environment: str) -> bool:
    """Whether a recreate in `environment` announces its maintenance window."""
    return environment == PRODUCTION or config.environment(environment).requires_approval


def outage_s(record: ReleaseRecord) -> float | None:
    """The time nothing served during a recreate `record`, from its phases; None when it did
    not time them all."""
    if not all(phase in record.timings for phase in OUTAGE_PHASES):
        return None
    return sum(record.timings[phase] for phase in OUTAGE_PHASES)


def expected_downtime(records: Sequence[ReleaseRecord]) -> ExpectedDowntime:
    """The newest succeeded recreate's outage among `records` (oldest first), else the default."""
    for record in reversed(records):
        if record.kind == "deploy" and record.strategy in RECREATES and record.serving:
            measured = outage_s(record)
            if measured is not None:
                return ExpectedDowntime(
                    measured,
                    f"the last recreate here, release {record.id}, was down {measured:.1f} s",
                )
    return ExpectedDowntime(
        DEFAULT_DOWNTIME_S, "no recreate measured in this environment yet: a default"
    )


def configured(config: Config, environ: Mapping[str, str]) -> bool:
    """Whether any notification hook's URL variable is set."""
    settings = config.notifications
    variables = (settings.slack_webhook_env, settings.status_page_hook_env)
    return any(environ.get(name, "").strip() for name in variables)


def announce(
    ctx: StepContext,
    record: ReleaseRecord,
    expected: ExpectedDowntime,
    *,
    environ: Mapping[str, str] | None = None,
    post: notify_step.Poster = notify_step.default_post,
) -> str:
    """Announce the maintenance window of `record`'s recreate deploy; what happened, as a line
    for the record. Raises EnvironmentUnreachable when a hook fails and notifications are
    required (nothing has stopped yet)."""
    env = os.environ if environ is None else environ
    if not configured(ctx.config, env):
        return (
            "maintenance window not announced: no notification hook is configured "
            f"([notifications]); expected downtime {expected.text}"
        )
    what = f"{record.version or record.image}"
    message = (
        f"{what} is deployed with the recreate strategy ({record.strategy_reason or 'asked for'}): "
        f"the service is down from the stop of the running release until {what} is healthy, "
        f"expected {expected.text}"
    )
    # No `release`: the deploy knows the image's version, not the tag a GitHub deployment
    # would need (the release workflow records those itself).
    result = notify_step.run(
        ctx,
        event="maintenance-window",
        environment=record.environment,
        message=message,
        environ=env,
        post=post,
    )
    sent = ", ".join(d.hook for d in result.deliveries if d.ok)
    if result.failed:
        problems = "; ".join(f"{d.hook}: {d.detail}" for d in result.failed)
        ctx.progress(f"warning: maintenance window announcement failed ({problems}); going on")
        return (
            f"maintenance window announcement FAILED ({problems})"
            + (f"; sent to {sent}" if sent else "")
            + f"; expected downtime {expected.text}"
        )
    return f"maintenance window announced to {sent}: expected downtime {expected.text}"
