"""The release runbook as data: its steps in order, their gates, and what each hands the next.

    verify release -> build image (pinned by digest) -> deploy staging -> smoke -> validate
      -> [production approval] -> backup (verified) -> migrate -> deploy production -> verify
      -> monitor (rolls back on breach)

Each `Step` is one job of `.github/workflows/release.yml` and one `deploytools` command line,
written as a template whose `{placeholders}` are filled from what earlier steps handed over
(`{tag}`, `{version}` and `{revision}` from the pushed tag, `{image}` =
`repository@sha256:...` from the build). Nothing here
runs anything: `pipeline run` (walker.py) walks `STEPS`, and the workflow contract test holds
the workflows to them (same jobs, same order, same commands, same environments, one approval).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from deploytools.errors import UsageError

#: What a step can receive: the release tag, its version (X.Y.Z) and commit, and the image
#: reference pinned by digest.
INPUTS = ("tag", "version", "revision", "image")


@dataclass(frozen=True)
class Step:
    """One runbook step: one job, one `deploytools` command.

    :param name: the step's name, also its job id in release.yml.
    :param title: what it does, as the runbook says it.
    :param runbook_step: the step number of the runbook (production-deployment-v1.15.2.md).
    :param command: the `deploytools` arguments (without the program name) as templates.
    :param environment: the deploy.toml environment it acts on; None: none (the release itself).
    :param approval: whether a person's approval gates it (GitHub environment reviewers, or the
        local pipeline's prompt).
    :param hands_over: what the next steps receive from it, in words.
    """

    name: str
    title: str
    runbook_step: int
    command: tuple[str, ...]
    environment: str | None
    approval: bool = False
    hands_over: str = ""
    _inputs: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        inputs = _placeholders(self.command)
        unknown = inputs - set(INPUTS)
        if unknown:
            raise ValueError(f"step {self.name}: unknown placeholders {sorted(unknown)}")
        object.__setattr__(self, "_inputs", frozenset(inputs))

    @property
    def needs(self) -> frozenset[str]:
        """The inputs (of INPUTS) its command line uses."""
        return self._inputs

    @property
    def production(self) -> bool:
        return self.environment == PRODUCTION

    def argv(self, values: Mapping[str, str]) -> list[str]:
        """The command's arguments with `values` filled in (all it needs must be there)."""
        template = self.command
        missing = sorted(_placeholders(template) - set(values))
        if missing:
            raise UsageError(
                f"step {self.name} needs {', '.join(missing)}, which no earlier step provided",
                untouched="nothing was run",
            )
        return [part.format(**values) for part in template]


def _placeholders(template: tuple[str, ...]) -> set[str]:
    return {name for part in template for _, name, _, _ in string.Formatter().parse(part) if name}


STAGING = "staging"
PRODUCTION = "production"

STEPS: tuple[Step, ...] = (
    Step(
        name="verify-release",
        title="Verify the release tag (VERSION, clean pushed tree, notes, migrations, checks)",
        runbook_step=1,
        command=("release", "verify", "--tag", "{tag}"),
        environment=None,
        hands_over="the verified tag and its commit",
    ),
    Step(
        name="build-image",
        title="Build the image once from the tag; everything after uses its digest",
        runbook_step=2,
        command=("image", "build", "--tag", "{tag}", "--push"),
        environment=None,
        hands_over="the image pinned by digest (repository@sha256:...)",
    ),
    Step(
        name="deploy-staging",
        title="Deploy the image to staging",
        runbook_step=2,
        command=("deploy", "--env", STAGING, "--image", "{image}"),
        environment=STAGING,
        hands_over="staging running the release",
    ),
    Step(
        name="smoke-staging",
        title="Smoke tests on staging",
        runbook_step=2,
        command=("smoke", "--env", STAGING),
        environment=STAGING,
        hands_over="smoke results",
    ),
    Step(
        name="validate-staging",
        title="Staging validation (flows, RBAC, latency, migrations, logs)",
        runbook_step=3,
        command=("validate", "--env", STAGING),
        environment=STAGING,
        hands_over="a release fit for production",
    ),
    Step(
        name="approve-production",
        title="A person approves production",
        runbook_step=4,
        # The gate holds no secrets and touches no engine: it checks the configuration that the
        # production steps after it will use, so an approval is never spent on a broken one.
        command=("config", "check"),
        environment=PRODUCTION,
        approval=True,
        hands_over="the approval",
    ),
    Step(
        name="backup-production",
        title="Back up the production database and verify the backup",
        runbook_step=4,
        command=("backup", "create", "--env", PRODUCTION),
        environment=PRODUCTION,
        hands_over="a verified backup (its id goes into the release record)",
    ),
    Step(
        name="migrate-production",
        title="Run the release's Alembic migrations on production",
        runbook_step=5,
        command=("migrate", "--env", PRODUCTION, "--image", "{image}"),
        environment=PRODUCTION,
        hands_over="the database at the release's revision",
    ),
    Step(
        name="deploy-production",
        title="Deploy the image to production",
        runbook_step=5,
        # --yes: the approval was given before the production steps (the workflow's
        # environment, or pipeline run's own gate).
        command=("deploy", "--env", PRODUCTION, "--image", "{image}", "--yes"),
        environment=PRODUCTION,
        hands_over="production running the release",
    ),
    Step(
        name="verify-production",
        title="Post-deployment verification",
        runbook_step=6,
        command=("verify", "--env", PRODUCTION),
        environment=PRODUCTION,
        hands_over="verification results",
    ),
    Step(
        name="monitor-production",
        title="Watch production for an hour; roll back on a breach",
        runbook_step=7,
        command=("monitor", "--env", PRODUCTION, "--duration", "1h", "--rollback-on-breach"),
        environment=PRODUCTION,
        hands_over="a release that held for an hour",
    ),
)

#: What runs when a production step fails: back to the release before (its database restored
#: only if the failed release's migrations were not expand-only: `rollback` decides).
ROLLBACK = Step(
    name="rollback-production",
    title="Roll production back to the previous release",
    runbook_step=5,
    # --yes: no one is at a prompt in CI; the approval of the release was the consent, and
    # rollback restores the database only when the release's migrations were not expand-only.
    command=("rollback", "--env", PRODUCTION, "--yes"),
    environment=PRODUCTION,
    hands_over="production running the previous release",
)


#: The steps whose failure calls for ROLLBACK. Every other failure already leaves the previous
#: release serving: release and staging steps never touch production; a failed backup changed
#: nothing; a failed migration leaves the schema at its last good revision under the old
#: release; `deploy` rolls back by itself when the new release never becomes healthy; `monitor`
#: rolls back by itself on a breach. A second rollback there would go one release too far.
ROLLBACK_WHEN_FAILED: tuple[str, ...] = ("verify-production",)


def step(name: str) -> Step:
    """The step called `name` (ROLLBACK included)."""
    for candidate in (*STEPS, ROLLBACK):
        if candidate.name == name:
            return candidate
    raise UsageError(
        f"no pipeline step {name!r}",
        untouched="nothing was run",
        hint="steps: " + ", ".join(s.name for s in (*STEPS, ROLLBACK)),
    )


def approval_gate() -> Step:
    """The one step that waits for a person."""
    (gate,) = (s for s in STEPS if s.approval)
    return gate


def after(name: str) -> tuple[Step, ...]:
    """The steps that run after `name`, in order."""
    names = [s.name for s in STEPS]
    return STEPS[names.index(step(name).name) + 1 :]
