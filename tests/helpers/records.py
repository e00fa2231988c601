"""Release records for unit tests of what the history stores (History over tests/fakes'
MemoryStore)."""

from __future__ import annotations

from typing import Any

from deploytools.store.records import ReleaseRecord


def record(id: str, outcome: str = "succeeded", **kw: Any) -> ReleaseRecord:
    """A release record of environment "prod" (a deploy unless `kind` says otherwise)."""
    return ReleaseRecord(
        id=id,
        environment="prod",
        kind=kw.pop("kind", "deploy"),
        who="t",
        started="x",
        image="i",
        outcome=outcome,
        **kw,
    )
