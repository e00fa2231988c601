"""What every step receives: the configuration, the targets, and a way to report progress.

Steps do not print: they call `ctx.progress(...)`, and the CLI decides where that goes (a
terminal, CI's log, nowhere for `--json`). Side effects are injected here so tests can swap them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from deploytools.config import Config
from deploytools.target import Runner, Target, default_runner


def _silent(message: str) -> None:
    """Progress goes nowhere unless the caller asks for it."""


@dataclass
class StepContext:
    config: Config
    progress: Callable[[str], None] = _silent
    runner: Runner = default_runner
    _targets: dict[str, Target] = field(default_factory=dict, init=False, repr=False)

    def target(self, environment: str) -> Target:
        """The environment's target, made once (so its engine is connected once)."""
        if environment not in self._targets:
            self._targets[environment] = Target.for_environment(
                self.config, environment, runner=self.runner
            )
        return self._targets[environment]
