"""The SQL migration lint. Pure text in, data out: no database, no process, no import of the
application.

- statements.py: a small PostgreSQL lexer; SQL split into statements with their lines.
- catalog.py: the rules' names, meanings, and whether they keep a release from expand-only.
- schema.py: what the lint learns of the database while it reads; alembic_hints.py: the former
  column types a migration's `alter_column(existing_type=...)` gives.
- rules.py, alter_table.py: what one statement breaks.
- verdict.py: the findings, acknowledgements and expand-only verdict of a whole migration.
"""

from __future__ import annotations

from deploytools.sql_lint.catalog import RULE_OF, RULES, Rule
from deploytools.sql_lint.statements import Statement, split_statements
from deploytools.sql_lint.verdict import (
    Finding,
    LintResult,
    acknowledgements,
    lint_file,
    lint_sql,
    raise_if_failing,
    summary,
)

__all__ = [
    "RULES",
    "RULE_OF",
    "Finding",
    "LintResult",
    "Rule",
    "Statement",
    "acknowledgements",
    "lint_file",
    "lint_sql",
    "raise_if_failing",
    "split_statements",
    "summary",
]
