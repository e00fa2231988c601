"""The SQL migration lint: statements (statements.py), rules (rules.py), and the findings and
expand-only verdict of a whole migration (verdict.py). Pure text in, data out: no database,
no process, no import of the application."""

from __future__ import annotations

from deploytools.sql_lint.rules import RULE_OF, RULES, Rule
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
