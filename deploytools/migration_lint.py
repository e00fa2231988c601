"""Offline lint of the Alembic migrations a release adds: what they lock, what they break.

The SQL is what Alembic itself would run: `alembic upgrade PREV_HEAD:HEAD --sql`, rendered inside
the release's own image (`deploytools.migration_render`), never in deploytools' own interpreter.
No database is contacted: offline mode only renders SQL.

Each statement is matched against rules for operations that take long ACCESS EXCLUSIVE locks or
break the previous release while it still runs. A finding fails the release unless the migration
file acknowledges it with a comment naming the rule and a reason:

    # deploytools: allow add-not-null-column the table is empty in every environment

The lint also classifies the release as expand-only (every statement additive, so the old release
keeps working beside the new schema) or not; later steps choose the deploy strategy from that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

RULES: Mapping[str, str] = {
    "add-not-null-column": "adds a NOT NULL column without a DEFAULT (the old release's INSERTs "
    "fail; older PostgreSQL rewrites the table)",
    "set-not-null": "sets NOT NULL on an existing column (scans the table under an exclusive lock; "
    "the old release may still write NULL)",
    "create-index-not-concurrently": "creates an index without CONCURRENTLY (blocks writes for "
    "the whole build)",
    "constraint-without-not-valid": "adds a FOREIGN KEY or CHECK constraint without NOT VALID "
    "(validates every row under lock)",
    "rename-column": "renames a column (the old release still uses the old name)",
    "rename-table": "renames a table (the old release still uses the old name)",
    "drop-column": "drops a column (the old release may still read or write it)",
    "drop-table": "drops a table (the old release may still use it)",
    "alter-column-type": "changes a column's type (rewrites the table under an exclusive lock)",
    "no-lock-timeout": "runs DDL without a lock_timeout (waits behind live traffic and queues "
    "every request behind itself)",
    "concurrently-in-transaction": "CREATE INDEX CONCURRENTLY inside a transaction (PostgreSQL "
    "refuses it; use op.get_context().autocommit_block())",
}

_RUNNING_RE = re.compile(r"^--\s*Running upgrade\s+(?:(\S+)\s+)?->\s*(\S+)", re.IGNORECASE)
_MARKER_RE = re.compile(r"#\s*deploytools:\s*allow\s+([a-z][a-z-]*)[ \t]*(.*)$", re.MULTILINE)
_IDENT = r'(?:"[^"]+"|[\w.]+)'
_CREATE_TABLE_RE = re.compile(rf"^CREATE TABLE (?:IF NOT EXISTS )?({_IDENT})", re.IGNORECASE)
_ALTER_TABLE_RE = re.compile(
    rf"^ALTER TABLE (?:IF EXISTS )?(?:ONLY )?({_IDENT})\s+(.*)$", re.IGNORECASE | re.DOTALL
)
_CREATE_INDEX_RE = re.compile(
    rf"^CREATE (?:UNIQUE )?INDEX (CONCURRENTLY )?(?:IF NOT EXISTS )?(?:{_IDENT} )?ON (?:ONLY )?"
    rf"({_IDENT})",
    re.IGNORECASE,
)
_BOOKKEEPING_RE = re.compile(r"^(?:INSERT INTO|UPDATE|DELETE FROM|CREATE TABLE) alembic_version\b")
_LOCK_TIMEOUT_RE = re.compile(r"^SET (?:(LOCAL|SESSION) )?lock_timeout\b", re.IGNORECASE)


@dataclass(frozen=True)
class Statement:
    """One SQL statement of the offline output, and the migration it belongs to."""

    revision: str
    sql: str


@dataclass(frozen=True)
class Finding:
    rule: str
    revision: str
    migration: str
    statement: str
    message: str
    acknowledged: bool = False
    reason: str = ""

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


# -- Linting ---------------------------------------------------------------------------------


def split_statements(sql: str) -> list[Statement]:
    """The statements of Alembic's offline output, each with the revision whose upgrade emits it.

    Alembic writes `-- Running upgrade A -> B` before each migration's statements and ends every
    statement with `;` and a blank line; statements before the first marker belong to no revision
    ("" : env.py's preamble).
    """
    statements: list[Statement] = []
    revision = ""
    for chunk in re.split(r";[ \t]*\n", sql + "\n"):
        body: list[str] = []
        for line in chunk.strip().splitlines():
            stripped = line.strip()
            running = _RUNNING_RE.match(stripped)
            if running and not body:
                revision = running.group(2)
                continue
            if stripped.startswith("--") and not body:
                continue
            body.append(line)
        text = "\n".join(body).strip()
        if text:
            statements.append(Statement(revision=revision, sql=text))
    return statements


def _norm(sql: str) -> str:
    return " ".join(sql.split())


def _unquote(name: str) -> str:
    return name.strip('"').split(".")[-1].strip('"').lower()


def _rules_of(statement: str, new_tables: set[str]) -> list[str]:
    """The rules one statement breaks (before acknowledgements)."""
    sql = _norm(statement)
    upper = sql.upper()
    found: list[str] = []
    index = _CREATE_INDEX_RE.match(sql)
    if index and not index.group(1) and _unquote(index.group(2)) not in new_tables:
        found.append("create-index-not-concurrently")
    if upper.startswith("DROP TABLE"):
        found.append("drop-table")
    alter = _ALTER_TABLE_RE.match(sql)
    if not alter:
        return found
    table_is_new = _unquote(alter.group(1)) in new_tables
    actions = alter.group(2)
    # One ALTER TABLE may carry several comma-separated actions.
    for action in re.split(r",\s*(?=(?:ADD|DROP|ALTER|RENAME|VALIDATE)\b)", actions, flags=re.I):
        act = action.upper()
        if act.startswith("ADD COLUMN") or (
            act.startswith("ADD ") and not act.startswith(("ADD CONSTRAINT", "ADD PRIMARY"))
        ):
            if " NOT NULL" in act and " DEFAULT " not in act and not table_is_new:
                found.append("add-not-null-column")
        elif act.startswith("ADD CONSTRAINT") or act.startswith(("ADD FOREIGN", "ADD CHECK")):
            is_fk_or_check = "FOREIGN KEY" in act or " CHECK " in f" {act}"
            if is_fk_or_check and "NOT VALID" not in act and not table_is_new:
                found.append("constraint-without-not-valid")
        elif act.startswith("RENAME COLUMN") or (
            act.startswith("RENAME ") and not act.startswith(("RENAME TO", "RENAME CONSTRAINT"))
        ):
            found.append("rename-column")
        elif act.startswith("RENAME TO"):
            found.append("rename-table")
        elif act.startswith("DROP COLUMN") or (
            act.startswith("DROP ") and not act.startswith(("DROP CONSTRAINT", "DROP DEFAULT"))
        ):
            found.append("drop-column")
        elif act.startswith("ALTER"):
            if re.search(r"\b(?:SET DATA )?TYPE\b", act):
                found.append("alter-column-type")
            if "SET NOT NULL" in act and not table_is_new:
                found.append("set-not-null")
    return found


def _is_additive(statement: str, new_tables: set[str]) -> bool:
    """True for statements that only add: the release before can run beside the result."""
    sql = _norm(statement)
    upper = sql.upper()
    if upper.startswith(("CREATE TABLE", "CREATE SEQUENCE", "CREATE TYPE", "COMMENT ON")):
        return True
    if upper.startswith("INSERT INTO"):
        return True  # new rows (seed data) do not change what the old release reads
    index = _CREATE_INDEX_RE.match(sql)
    if index:
        return bool(index.group(1)) or _unquote(index.group(2)) in new_tables
    alter = _ALTER_TABLE_RE.match(sql)
    if not alter:
        return False
    table_is_new = _unquote(alter.group(1)) in new_tables
    for action in re.split(
        r",\s*(?=(?:ADD|DROP|ALTER|RENAME|VALIDATE)\b)", alter.group(2), flags=re.I
    ):
        act = action.upper()
        if act.startswith("ADD CONSTRAINT") or act.startswith(("ADD FOREIGN", "ADD CHECK")):
            if not ("NOT VALID" in act or table_is_new):
                return False
        elif act.startswith("ADD"):
            if " NOT NULL" in act and " DEFAULT " not in act and not table_is_new:
                return False
        elif act.startswith("VALIDATE CONSTRAINT"):
            continue
        elif not table_is_new:
            return False
    return True


def _is_housekeeping(sql: str) -> bool:
    upper = _norm(sql).upper()
    return (
        upper in ("BEGIN", "COMMIT", "ROLLBACK")
        or upper.startswith(("SET ", "SELECT ", "RESET "))
        or bool(_BOOKKEEPING_RE.match(_norm(sql)))
    )


def acknowledgements(source_text: str) -> dict[str, str]:
    """The rules a migration file acknowledges, each with its reason (an empty reason does not
    count: an acknowledgement says why)."""
    return {m.group(1): m.group(2).strip() for m in _MARKER_RE.finditer(source_text)}


def lint_sql(
    sql: str,
    *,
    migration_sources: Mapping[str, str],
    migration_files: Mapping[str, str],
    from_revision: str | None = None,
    to_revision: str | None = None,
) -> LintResult:
    """Lint Alembic's offline SQL.

    :param sql: the output of `alembic upgrade FROM:TO --sql`.
    :param migration_sources: revision -> the text of its migration file (for acknowledgements).
    :param migration_files: revision -> the migration file's path (for messages).
    :param from_revision: the head the release starts from (None: the empty database).
    :param to_revision: the release's head.
    """
    statements = split_statements(sql)
    new_tables: set[str] = set()
    findings: list[Finding] = []
    not_additive: list[str] = []
    revisions: list[str] = []
    lock_timeout_local = False
    lock_timeout_session = False
    timeout_flagged: set[str] = set()
    in_transaction = False
    for statement in statements:
        text = _norm(statement.sql)
        upper = text.upper()
        rev = statement.revision
        if rev and rev not in revisions:
            revisions.append(rev)
        if upper in ("BEGIN", "COMMIT", "ROLLBACK"):
            lock_timeout_local = False  # SET LOCAL ends with its transaction
            in_transaction = upper == "BEGIN"
            continue
        timeout = _LOCK_TIMEOUT_RE.match(text)
        if timeout:
            if (timeout.group(1) or "").upper() == "LOCAL":
                lock_timeout_local = True
            else:
                lock_timeout_session = True
            continue
        if _is_housekeeping(statement.sql):
            continue
        created = _CREATE_TABLE_RE.match(text)
        found = _rules_of(statement.sql, new_tables)
        index = _CREATE_INDEX_RE.match(text)
        if index and index.group(1) and in_transaction:
            found.append("concurrently-in-transaction")
        if not (lock_timeout_local or lock_timeout_session) and rev not in timeout_flagged:
            timeout_flagged.add(rev)
            found.append("no-lock-timeout")
        if not _is_additive(statement.sql, new_tables):
            not_additive.append(f"{rev or '(env.py)'}: {text[:100]}")
        if created:
            new_tables.add(_unquote(created.group(1)))
        acks = acknowledgements(migration_sources.get(rev, ""))
        for rule in found:
            reason = acks.get(rule, "")
            findings.append(
                Finding(
                    rule=rule,
                    revision=rev or "(env.py)",
                    migration=Path(migration_files.get(rev, "env.py")).name,
                    statement=statement.sql,
                    message=RULES[rule],
                    acknowledged=bool(reason),
                    reason=reason,
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
