"""The release pipeline: the runbook as data, and the walker that runs it.

    runbook.py  the runbook's steps in order, their gates and hand-overs (data; runs nothing)
    walker.py   `deploytools pipeline run`: walks runbook.STEPS calling the step functions
    record.py   the pipeline record: what each step did, what it handed on (a re-run continues)
    store.py    where the records, the checks' evidence and the pipeline lock are kept

`from deploytools import pipeline` gives the runbook's names (pipeline.STEPS, pipeline.step),
as before; the walker is `deploytools.pipeline.walker`.
"""

from __future__ import annotations

from deploytools.pipeline.runbook import (
    INPUTS,
    PRODUCTION,
    ROLLBACK,
    ROLLBACK_WHEN_FAILED,
    STAGING,
    STEPS,
    Step,
    after,
    approval_gate,
    step,
)

__all__ = [
    "INPUTS",
    "PRODUCTION",
    "ROLLBACK",
    "ROLLBACK_WHEN_FAILED",
    "STAGING",
    "STEPS",
    "Step",
    "after",
    "approval_gate",
    "step",
]
