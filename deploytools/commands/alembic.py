"""Argv for Alembic, run inside the release's own image by the migration lint: data, no I/O.

`base` is Alembic as the image runs it, before its subcommand: `["alembic", "-c",
"/app/alembic.ini"]` (`release.alembic_command`, or `project.migration_command` up to its
`upgrade`).
"""

from __future__ import annotations

from collections.abc import Sequence

#: The subcommand `project.migration_command` runs; what comes before it is Alembic itself.
UPGRADE = "upgrade"


def base_command(
    migration_command: Sequence[str], alembic_command: Sequence[str] = ()
) -> list[str] | None:
    """Alembic as the image runs it: `alembic_command` when given, else `migration_command`
    up to its `upgrade` word; None when neither says (a migration command without `upgrade`)."""
    if alembic_command:
        return list(alembic_command)
    words = list(migration_command)
    if UPGRADE not in words or words.index(UPGRADE) == 0:
        return None
    return words[: words.index(UPGRADE)]


def heads(base: Sequence[str]) -> list[str]:
    """`alembic heads`: one line per head, "REV (head)" (with branch labels between)."""
    return [*base, "heads"]


def offline_upgrade(base: Sequence[str], from_revision: str | None, to_revision: str) -> list[str]:
    """`alembic upgrade FROM:TO --sql`: the SQL the upgrade would run, rendered offline (no
    database); from the empty database when `from_revision` is None."""
    span = f"{from_revision}:{to_revision}" if from_revision else to_revision
    return [*base, UPGRADE, span, "--sql"]
