"""What every step receives: the configuration, the targets, and a way to report progress.

Steps do not print: they call `ctx.progress(...)`, and the CLI decides where that goes (a
terminal, CI's log, nowhere for `--json`). Side effects are injected here so tests can swap them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from deploytools.config import Config
from deploytools.errors import UsageError
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.target import Runner, Target, default_runner

#: What an environment runs on: Compose on one engine, or a Swarm cluster.
EnvironmentPlatform = Target | SwarmPlatform


def _silent(message: str) -> None:
    """Progress goes nowhere unless the caller asks for it."""


@dataclass
class StepContext:
    config: Config
    progress: Callable[[str], None] = _silent
    runner: Runner = default_runner
    _targets: dict[str, Target] = field(default_factory=dict, init=False, repr=False)
    _swarms: dict[str, SwarmPlatform] = field(default_factory=dict, init=False, repr=False)

    def platform(self, environment: str) -> EnvironmentPlatform:
        """What the environment runs on, made once (so its engines are connected once): a
        Target (Compose on one engine) or a SwarmPlatform (`platform = "swarm"`)."""
        if not self.config.environment(environment).is_swarm:
            return self.target(environment)
        if environment not in self._swarms:
            self._swarms[environment] = SwarmPlatform.for_environment(self.config, environment)
        return self._swarms[environment]

    def target(self, environment: str) -> Target:
        """The environment's Compose target, made once (so its engine is connected once);
        UsageError for a Swarm environment, where a step that has no Swarm path yet stops
        before it touches anything."""
        if self.config.environment(environment).is_swarm:
            raise swarm_not_supported(environment)
        if environment not in self._targets:
            self._targets[environment] = Target.for_environment(
                self.config, environment, runner=self.runner
            )
        return self._targets[environment]


def swarm_not_supported(environment: str) -> UsageError:
    return UsageError(
        f"environment {environment} runs on Swarm, and this command does not run there yet",
        untouched="nothing was done",
        hint="see docs/configuration.md (Swarm environments) for what runs on Swarm",
        facts={"environment": environment, "platform": "swarm"},
    )
