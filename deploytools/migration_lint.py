"""Offline lint of the Alembic migrations a release adds: what they lock, what they break.

The SQL is what Alembic itself would run: `alembic upgrade PREV_HEAD:HEAD --sql`, rendered inside
the release's own image (`deploytools.migration_render`), never in deploytools' own interpreter.
No database is contacted: offline mode only renders SQL.

Each statement is matched against the rules of `deploytools.sql_lint`, for operations that take
long ACCESS EXCLUSIVE locks or break the previous release while it still runs. A finding fails
the release unless the migration file acknowledges it with a comment naming the rule and a
reason:

    # deploytools: allow add-not-null-column the table is empty in every environment

The lint also classifies the release as expand-only (every statement additive, so the old release
keeps working beside the new schema) or not; later steps choose the deploy strategy from that.
"""

from __future__ import annotations

# The SQL rules live in deploytools.sql_lint; their names stay importable from here.
from deploytools.sql_lint import (
    RULES,
    Finding,
    LintResult,
    Statement,
    acknowledgements,
    lint_sql,
    split_statements,
)

__all__ = [
    "RULES",
    "Finding",
    "LintResult",
    "Statement",
    "acknowledgements",
    "lint_sql",
    "split_statements",
]
