"""A suite's run kept in the release record: what `report` shows when no --results are given.

smoke, validate, verify and monitor each attach a summary of their run to the environment's
current release record (store/releases.py `attach_checks`): the suite, when, the verdict and each
check's name, verdict, measured value, threshold and detail. The numbers behind a check (its
`data`: samples, log lines) stay in the --json output; the record keeps what the report shows.
The summary has the shape of the suite's --json result, so the report reads both the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from deploytools.checks.results import CheckResult, Verdict
from deploytools.context import StepContext
from deploytools.errors import DeployError
from deploytools.session import open_environment


class Save(Protocol):
    """What keeps a suite's summary in a release record (`save` below; tests pass a fake)."""

    def __call__(
        self,
        ctx: StepContext,
        environment: str,
        data: dict[str, Any],
        *,
        release_id: str | None = None,
    ) -> str: ...


def summary(
    *,
    suite: str,
    environment: str,
    started: str,
    finished: str,
    verdict: Verdict,
    results: Iterable[CheckResult],
    **extra: Any,
) -> dict[str, Any]:
    """A suite run as stored in the record; `extra` adds monitor's samples, breaches, rollback."""
    return {
        "suite": suite,
        "environment": environment,
        "started": started,
        "finished": finished,
        "verdict": str(verdict),
        "results": [
            {
                "name": r.name,
                "verdict": str(r.verdict),
                "measured": r.measured,
                "threshold": r.threshold,
                "detail": r.detail,
            }
            for r in results
        ],
        **extra,
    }


def save(
    ctx: StepContext, environment: str, data: dict[str, Any], *, release_id: str | None = None
) -> str:
    """Attach `data` to release `release_id` (default: the current one) of `environment`.

    Returns a note for the result: where it was saved, or why it was not. Never raises: the
    checks ran and their verdict stands whether or not the history can be written.
    """
    try:
        with open_environment(ctx, environment) as session:
            record = session.history.attach_checks(data, release_id=release_id)
    except DeployError as error:
        return f"not saved in a release record: {error.one_line()}"
    if record is None:
        which = f"no release record {release_id}" if release_id else "no current release record"
        return f"not saved in a release record: {environment} has {which}"
    return f"saved in release record {record.id} of {environment}"
