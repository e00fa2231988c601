"""The lint of a migration's SQL: findings, acknowledgements and the expand-only verdict.

Each statement is judged by the rules (rules.py). A finding fails the lint unless the migration
acknowledges it with a comment naming the rule and a reason (in a Python migration or, for raw
SQL, in the SQL file itself):

    # deploytools: allow add-not-null-column the table is empty in every environment
    -- deploytools: allow truncate the table holds only a cache

The release is expand-only when every statement only adds (the old release keeps working beside
the new schema, so it can keep serving while the migration runs): a statement that breaks a rule
of lock or compatibility never does, acknowledged or not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploytools.errors import CheckFailed
from deploytools.sql_lint.alembic_hints import former_types
from deploytools.sql_lint.rules import RULES, Schema, judge, transaction_edge
from deploytools.sql_lint.statements import Statement, split_statements

_MARKER_RE = re.compile(
    r"(?:#|--)\s*deploytools:\s*allow\s+([a-z][a-z-]*)[ \t]*(.*)$", re.MULTILINE
)
_BOOKKEEPING_RE = re.compile(r"^(?:INSERT INTO|UPDATE|DELETE FROM|CREATE TABLE) ALEMBIC_VERSION\b")
_HOUSEKEEPING = ("SET", "SELECT", "RESET", "SHOW", "SAVEPOINT", "RELEASE")


@dataclass(frozen=True)
class Finding:
    rule: str
    revision: str
    migration: str
    statement: str
    message: str
    acknowledged: bool = False
    reason: str = ""
    #: The statement's first line in the SQL that was linted (0: unknown).
    line: int = 0

    def describe(self) -> str:
        shown = " ".join(self.statement.split())
        shown = shown if len(shown) <= 120 else shown[:117] + "..."
        head = f"{self.migration} ({self.revision}): {self.rule}: {shown}"
        if self.acknowledged:
            return f"{head} [acknowledged: {self.reason}]"
        return f"{head} - {self.message}"


@dataclass(frozen=True)
class LintResult:
    """The lint of the migrations between two heads (`from_revision` None means from the start)."""

    from_revision: str | None
    to_revision: str | None
    revisions: tuple[str, ...]
    findings: tuple[Finding, ...]
    expand_only: bool
    not_additive: tuple[str, ...] = ()
    sql: str = field(default="", repr=False)

    @property
    def failing(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.acknowledged)

    @property
    def acknowledged(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.acknowledged)


def acknowledgements(source_text: str) -> dict[str, str]:
    """The rules a migration file acknowledges, each with its reason (an empty reason does not
    count: an acknowledgement says why)."""
    return {m.group(1): m.group(2).strip() for m in _MARKER_RE.finditer(source_text)}


def _is_housekeeping(statement: Statement) -> bool:
    words = statement.words
    return (
        not words
        or words[0] in _HOUSEKEEPING
        or transaction_edge(words) is not None
        or bool(_BOOKKEEPING_RE.match(statement.code))
    )


def _lock_timeout(words: tuple[str, ...]) -> tuple[str, bool] | None:
    """For `SET [LOCAL|SESSION] lock_timeout = V`: (scope, whether V sets a timeout: 0 is
    none)."""
    if words[:1] != ("SET",):
        return None
    i = 2 if words[1:2] in (("LOCAL",), ("SESSION",)) else 1
    if words[i : i + 1] != ("LOCK_TIMEOUT",):
        return None
    value = words[i + 2 : i + 3]
    return (words[1] if i == 2 else "SESSION"), value not in (("0",), ("DEFAULT",))


def learn_schema(context_sql: str) -> Schema:
    """The schema `context_sql` builds (its tables' columns and types), as the database the
    linted SQL starts from: statements read for what they teach, never judged."""
    schema = Schema()
    for statement in split_statements(context_sql):
        if statement.words and not _is_housekeeping(statement):
            judge(statement.words, schema)
            schema.pending.clear()
    schema.settle()
    return schema


def lint_sql(
    sql: str,
    *,
    migration_sources: Mapping[str, str],
    migration_files: Mapping[str, str],
    from_revision: str | None = None,
    to_revision: str | None = None,
    context_sql: str = "",
) -> LintResult:
    """Lint Alembic's offline SQL (or any SQL: its statements before a `-- Running upgrade`
    marker belong to revision "").

    :param sql: the output of `alembic upgrade FROM:TO --sql`.
    :param migration_sources: revision -> the text of its migration file (for acknowledgements).
    :param migration_files: revision -> the migration file's path (for messages).
    :param from_revision: the head the release starts from (None: the empty database).
    :param to_revision: the release's head.
    :param context_sql: SQL that built the schema the migrations start from (a
        `pg_dump --schema-only`, or the offline SQL up to `from_revision`): read for the
        columns' types only, so that a widening is told from a rewrite. A migration's own
        `op.alter_column(..., existing_type=...)` tells the former type too (alembic_hints.py).
    """
    return _lint(
        sql,
        migration_sources=migration_sources,
        migration_files=migration_files,
        from_revision=from_revision,
        to_revision=to_revision,
        context_sql=context_sql,
        unnamed="(env.py)",
    )


def _lint(
    sql: str,
    *,
    migration_sources: Mapping[str, str],
    migration_files: Mapping[str, str],
    from_revision: str | None,
    to_revision: str | None,
    context_sql: str,
    unnamed: str,
) -> LintResult:
    """lint_sql; `unnamed` is the revision of statements before the first marker."""
    schema = learn_schema(context_sql)
    findings: list[Finding] = []
    not_additive: list[str] = []
    revisions: list[str] = []
    lock_timeout_local = False
    lock_timeout_session = False
    timeout_flagged: set[str] = set()
    acks_of: dict[str, dict[str, str]] = {}  # revision -> its acknowledgements, read once
    for statement in split_statements(sql):
        words = statement.words
        rev = statement.revision
        if rev and rev not in revisions:
            revisions.append(rev)
        edge = transaction_edge(words)
        if edge:
            lock_timeout_local = False  # SET LOCAL ends with its transaction
            schema.in_transaction = edge == "begin"
            schema.pending.clear()
            continue
        timeout = _lock_timeout(words)
        if timeout:
            scope, on = timeout
            if scope == "LOCAL":
                lock_timeout_local = on
            else:
                lock_timeout_session = on
            continue
        if _is_housekeeping(statement):
            continue
        if rev not in acks_of:
            # The revision's first judged statement: its migration file tells the former
            # column types (before any is judged) and the acknowledgements.
            source = migration_sources.get(rev, "")
            acks_of[rev] = acknowledgements(source)
            for key, former in former_types(source).items():
                schema.columns.setdefault(key, former)
        verdict = judge(words, schema)
        found = list(verdict.rules)
        if not (lock_timeout_local or lock_timeout_session) and rev not in timeout_flagged:
            timeout_flagged.add(rev)
            found.append("no-lock-timeout")
        if not verdict.additive:
            where = rev or unnamed or f"line {statement.line}"
            not_additive.append(f"{where}: {' '.join(statement.sql.split())[:100]}")
        for rule in found:
            reason = acks_of[rev].get(rule, "")
            findings.append(
                Finding(
                    rule=rule,
                    revision=rev or unnamed,
                    migration=Path(migration_files.get(rev, "env.py")).name,
                    statement=statement.sql,
                    message=RULES[rule],
                    acknowledged=bool(reason),
                    reason=reason,
                    line=statement.line,
                )
            )
    return LintResult(
        from_revision=from_revision,
        to_revision=to_revision,
        revisions=tuple(revisions),
        findings=tuple(findings),
        expand_only=not not_additive,
        not_additive=tuple(not_additive),
        sql=sql,
    )


def lint_file(sql: str, *, name: str = "-", context_sql: str = "") -> LintResult:
    """Lint raw SQL, as a person reviews a migration by hand: acknowledgements are `--`
    comments in the SQL itself, and findings are named after `name`.

    :param sql: the SQL to lint.
    :param name: the file's name, for messages ("-" for standard input).
    :param context_sql: SQL that built the schema before (see `lint_sql`).
    """
    return _lint(
        sql,
        migration_sources={"": sql},
        migration_files={"": name},
        from_revision=None,
        to_revision=None,
        context_sql=context_sql,
        unnamed="",
    )


def summary(result: LintResult) -> dict[str, Any]:
    """The lint as data: each finding's rule, line and statement, and the verdict."""
    return {
        "expand_only": result.expand_only,
        "ok": not result.failing,
        "findings": [
            {
                "rule": f.rule,
                "line": f.line,
                "statement": f.statement,
                "message": f.message,
                "revision": f.revision,
                "migration": f.migration,
                "acknowledged": f.acknowledged,
                "reason": f.reason,
            }
            for f in result.findings
        ],
        "not_additive": list(result.not_additive),
    }


def raise_if_failing(result: LintResult, *, name: str) -> None:
    """CheckFailed when a finding is not acknowledged, with the whole lint in its facts."""
    if result.failing:
        rules = sorted({f.rule for f in result.failing})
        raise CheckFailed(
            f"the lint of {name} found {len(result.failing)} unacknowledged finding(s): "
            + ", ".join(rules),
            untouched="nothing was run against a database",
            hint="change the migration, or acknowledge a finding with "
            "`-- deploytools: allow RULE REASON` in it",
            facts={"lint": summary(result)},
        )
